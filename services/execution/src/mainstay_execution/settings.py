"""Configuration of the execution service (``EXECUTION_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mainstay_common.settings import ServiceSettings

__all__ = ["ExecutionSettings"]


class ExecutionSettings(ServiceSettings):
    """One execution instance."""

    model_config = SettingsConfigDict(env_prefix="EXECUTION_", extra="ignore")

    service_name: str = "execution"
    http_port: int = Field(default=8106, ge=0, le=65535)
    model_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys of the model providers, one per entry: '<credential>=<key>', where"
        " <credential> is the name an agent's model entry gives as 'credential'.",
    )
    model_keys_file: str | None = Field(
        default=None,
        description="A file with one '<credential>=<key>' per line, read when model_keys is empty.",
    )
    ownership_check_s: float = Field(
        default=0.5,
        gt=0,
        description="How often an instance compares the partitions it is assigned with the"
        " task leases it holds (takes over new ones, lets lost ones go).",
    )
    retry_base_s: float = Field(
        default=0.5, gt=0, description="First backoff of a transient failure (full jitter)."
    )
    retry_max_s: float = Field(default=30.0, gt=0, description="Longest backoff.")
    max_attempts: int = Field(
        default=6, ge=1, description="Attempts of one model call before the next model is tried."
    )
    max_corrections: int = Field(
        default=2,
        ge=0,
        description="Malformed outputs (bad JSON, unknown tool, invalid arguments) a model may"
        " correct in a row before the next model in the chain is tried.",
    )
    circuit_failures: int = Field(
        default=5, ge=1, description="Failures in a row that open a model's circuit."
    )
    circuit_open_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit refuses calls."
    )
    wait_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a waiting task looks for what it waits for (a tool result, a"
        " hold, an approval) when no local notice wakes it earlier.",
    )
    tool_max_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts of one tool call that fails transiently (timeouts, 5xx, rate"
        " limited, circuit open) before the model is given the failure.",
    )
    memory_target: str | None = Field(
        default=None,
        description="The memory service's gRPC address (host:port). None: tasks neither"
        " recall nor remember.",
    )
    memory_timeout_s: float = Field(
        default=2.0, gt=0, description="Deadline of one recall; past it the task runs degraded."
    )
    ledger: bool = Field(
        default=True,
        description="Open a budget hold for every task with a cost cap and record the usage of"
        " every model call with the ledger (which must announce usage: LEDGER_USAGE_EVENTS)."
        " Off: nothing is charged and tasks report no cost.",
    )
    usage_confirm_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a finished task waits for the ledger to confirm its usage before"
        " it closes its hold regardless (the unconfirmed count is on task.completed).",
    )
    identity_url: str = Field(
        default="http://127.0.0.1:8103",
        description="The identity service: escalations are approval requests in its inboxes.",
    )
    mail_credentials: list[SecretStr] = Field(
        default_factory=list,
        description="Client credentials escalations are sent with, one per tenant:"
        " '<tenant>/<name>:<client secret>'. A tenant without: a task that would escalate"
        " fails with the reason instead.",
    )
    mail_credentials_file: str | None = Field(
        default=None,
        description="A file with one '<tenant>/<name>:<client secret>' per line, read when"
        " mail_credentials is empty.",
    )
    escalation_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="How long an escalation waits for a human; unanswered, the task is aborted.",
    )
    retention_s: float = Field(
        default=7 * 86_400.0,
        ge=0,
        description="How long a finished task keeps its checkpoints; then it is compacted to a"
        " summary (state, answer, cost, steps).",
    )
    retention_sweep_s: float = Field(
        default=60.0, gt=0, description="How often finished tasks are compacted."
    )
