"""The seeded corpus and queries of ``bench/memory.py``, and the curation replay.

``bench/memory.py``'s docstring describes the scope layout; this module makes
it. The same ``seed`` always gives the same writes (texts, scopes, kinds,
subjects, order) and the same questions.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np

from mainstay_memory.domain.curation import Thresholds, decide, merge_into, supersede
from mainstay_memory.domain.model import Kind, MemoryRecord, Outcome, RememberCommand, Scope
from mainstay_memory.domain.model import Source as RecordSource

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    import numpy.typing as npt

__all__ = [
    "AGENTS",
    "CORPUS_VERSION",
    "TENANT",
    "Curated",
    "Query",
    "Write",
    "corpus",
    "curate",
    "questions",
]

TENANT = "acme"
AGENTS = {
    "support": 0.35,
    "sales": 0.25,
    "concierge": 0.15,
    "coach": 0.12,
    "travel": 0.08,
    "research": 0.05,
}
USERS = 2000
SESSIONS_PER_USER = 5
CORPUS_VERSION = 1  # bump when the generator changes: --reuse then reloads
THRESHOLDS = Thresholds()  # the service's defaults (MEMORY_CURATION_*)
NEIGHBOURS = 5  # as many as MemoryService._neighbours asks the index for

# -- vocabularies ----------------------------------------------------------------


def _vocab(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(","))


NAMES = _vocab(
    "Maria, Ana, Lucas, Sofia, Omar, Priya, Chen, Yuki, Fatima, Noah, Emma, Liam, Olivia,"
    " Mateo, Aisha, Hiro, Lena, Jonas, Amara, Diego, Ingrid, Tariq, Mei, Pablo, Nadia,"
    " Kofi, Elena, Ravi, Zara, Tom, Clara, Felix, Ines, Malik, Hana, Oscar, Leila, Bruno,"
    " Sara, Kenji, Alice, Marco, Nina, Samir, Ruth, Viktor, Julia, Andre, Tess, Yusuf,"
    " Greta, Leo, Mina, Rosa, Ivan, Dara, Hugo, Ella, Arjun, Vera"
)
CITIES = _vocab(
    "Lisbon, Berlin, Paris, Madrid, Rome, Vienna, Prague, Oslo, Dublin, Warsaw, Athens,"
    " Zurich, Munich, Lyon, Porto, Seville, Milan, Naples, Krakow, Budapest, Copenhagen,"
    " Stockholm, Helsinki, Tallinn, Riga, Amsterdam, Brussels, Antwerp, Geneva, Valencia,"
    " Bilbao, Marseille, Hamburg, Cologne, Edinburgh, Glasgow, Manchester, Bristol,"
    " Toronto, Montreal, Boston, Chicago, Denver, Seattle, Austin, Tokyo, Osaka, Seoul,"
    " Singapore, Sydney, Melbourne, Auckland, Nairobi, Lagos, Cairo"
)
FOODS = _vocab(
    "sushi, ramen, tacos, paella, risotto, falafel, pho, curry, dumplings, lasagne,"
    " burritos, pancakes, couscous, goulash, pierogi, souvlaki, croissants, bagels,"
    " shakshuka, biryani, gnocchi, ceviche, tapas, noodles, hummus, kimchi, pizza, quiche,"
    " lentils, porridge"
)
HOBBIES = _vocab(
    "climbing, cycling, pottery, chess, gardening, running, swimming, painting,"
    " birdwatching, knitting, sailing, photography, baking, yoga, hiking, surfing, skiing,"
    " woodworking, calligraphy, dancing, fishing, kayaking, archery, juggling, origami"
)
JOBS = _vocab(
    "nurse, architect, teacher, pilot, plumber, chef, accountant, lawyer, designer,"
    " journalist, pharmacist, electrician, librarian, translator, carpenter, veterinarian,"
    " dentist, firefighter, economist, photographer, engineer, paramedic, baker, tailor"
)
RELATIVES = _vocab(
    "sister, brother, mother, father, cousin, grandmother, daughter, son, aunt, uncle"
)
LANGUAGES = _vocab(
    "Portuguese, German, French, Spanish, Italian, Japanese, Korean, Polish, Dutch,"
    " Swedish, Greek, Hindi"
)
MONTHS = _vocab(
    "January, February, March, April, May, June, July, August, September, October,"
    " November, December"
)
WEEKDAYS = _vocab("Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday")
PRODUCTS = _vocab(
    "headphones, laptop, blender, bicycle, kettle, camera, sofa, mattress, printer,"
    " monitor, backpack, jacket, espresso machine, phone case, desk lamp"
)
PLANS = _vocab("basic, standard, premium, family, business, student")
EVENTS = _vocab(
    "offsite, conference, workshop, launch, party, retreat, hackathon, wedding, reunion, fundraiser"
)
MUSIC = _vocab("jazz, techno, opera, folk, hip hop, reggae, punk, classical, blues, salsa")
DRINKS = _vocab("green tea, black coffee, chai, lemonade, matcha, espresso, hot chocolate")
CHANNELS = _vocab("email, SMS, WhatsApp, Slack, Signal")
DEVICES = _vocab("laptop, tablet, phone, smart TV, router, e-reader")
REASONS = _vocab("strike, storm, late train, traffic jam, passport problem, missed alarm")
CUISINES = _vocab("Thai, Italian, Ethiopian, Lebanese, Mexican, Georgian, Korean, Peruvian")
TEAMS = _vocab("billing, shipping, engineering, returns, security, onboarding")
ISSUES = _vocab("billing, login, shipping, refund, warranty, account")
PETS = _vocab("Biscuit, Luna, Pepper, Max, Miso, Olive, Rocky, Tofu")
LANDMARKS = _vocab("river, park, old market, cathedral, harbour, station, castle, university")


def _c(rng: random.Random, words: Sequence[str]) -> str:
    return rng.choice(words)


def _a(rng: random.Random, words: Sequence[str]) -> str:
    word = rng.choice(words)
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


# Some sentences carry where they came from, as notes taken in conversation do.
TAILS = (
    *([""] * 6),
    "per the last call",
    "noted during onboarding",
    "mentioned again today",
    "their assistant says",
)
# Each template takes the generator and a first name and returns a sentence.
FACTS: list[Callable[[random.Random, str], str]] = [
    lambda r, n: f"{n} works as {_a(r, JOBS)} at a small clinic in {_c(r, CITIES)}.",
    lambda r, n: f"{n} moved to {_c(r, CITIES)} in {_c(r, MONTHS)} with their {_c(r, RELATIVES)}.",
    lambda r, n: f"{n} has two kids and a dog called {_c(r, PETS)}.",
    lambda r, n: (
        f"{n}'s {_c(r, RELATIVES)} lives in {_c(r, CITIES)} and visits every {_c(r, MONTHS)}."
    ),
    lambda r, n: f"{n} speaks {_c(r, LANGUAGES)} and is learning {_c(r, LANGUAGES)} on weekends.",
    lambda r, n: f"{n} cycles to the office in {_c(r, CITIES)} on most days.",
    lambda r, n: f"{n} is allergic to {_c(r, FOODS)} and avoids it at restaurants.",
    lambda r, n: f"{n} trained as {_a(r, JOBS)} before switching careers last {_c(r, MONTHS)}.",
    lambda r, n: f"{n}'s birthday is in {_c(r, MONTHS)} and they celebrate in {_c(r, CITIES)}.",
]
PREFERENCES: list[Callable[[random.Random, str], str]] = [
    lambda r, n: f"{n} prefers {_c(r, FOODS)} over {_c(r, FOODS)} for lunch on weekdays.",
    lambda r, n: f"{n} likes {_c(r, HOBBIES)} on Sunday mornings when the weather is good.",
    lambda r, n: f"{n} wants replies in {_c(r, LANGUAGES)}, short and without emoji.",
    lambda r, n: f"{n} prefers window seats and flights that leave after {r.randint(7, 11)} am.",
    lambda r, n: f"{n} listens to {_c(r, MUSIC)} while working and cannot stand {_c(r, MUSIC)}.",
    lambda r, n: f"{n} would rather get {_c(r, CHANNELS)} messages than phone calls.",
    lambda r, n: f"{n}'s favourite drink is {_c(r, DRINKS)}, ideally with oat milk.",
    lambda r, n: (
        f"{n} likes quiet hotels near the {_c(r, LANDMARKS)} when visiting {_c(r, CITIES)}."
    ),
]
DECISIONS: list[Callable[[random.Random, str], str]] = [
    lambda r, n: f"We agreed to refund {n} for the {_c(r, PRODUCTS)} ordered in {_c(r, MONTHS)}.",
    lambda r, n: f"{n} decided to switch from the {_c(r, PLANS)} plan to the {_c(r, PLANS)} plan.",
    lambda r, n: f"The team chose {_c(r, CITIES)} for {n}'s {_c(r, EVENTS)} next {_c(r, MONTHS)}.",
    lambda r, n: f"{n} decided to cancel the {_c(r, PRODUCTS)} subscription after the trial.",
    lambda r, n: f"We will escalate {n}'s {_c(r, ISSUES)} ticket to the {_c(r, TEAMS)} team.",
    lambda r, n: (
        f"{n} approved a budget of {r.randint(2, 90) * 100} euros for the {_c(r, EVENTS)}."
    ),
    lambda r, n: (
        f"{n} chose the {_c(r, CUISINES)} caterer for the {_c(r, EVENTS)} in {_c(r, MONTHS)}."
    ),
]
EPISODES: list[Callable[[random.Random, str], str]] = [
    lambda r, n: f"{n} missed the flight to {_c(r, CITIES)} because of a {_c(r, REASONS)}.",
    lambda r, n: (
        f"{n} booked a table for {r.randint(2, 9)} at a {_c(r, CUISINES)} place in {_c(r, CITIES)}."
    ),
    lambda r, n: f"{n} called about a late {_c(r, PRODUCTS)} delivery and sounded upset.",
    lambda r, n: f"Last {_c(r, WEEKDAYS)} {n} ran a half marathon in {_c(r, CITIES)}.",
    lambda r, n: f"{n} asked for help resetting the password on their {_c(r, DEVICES)}.",
    lambda r, n: (
        f"{n} hosted a {_c(r, CUISINES)} dinner for {r.randint(3, 12)} friends on {_c(r, WEEKDAYS)}."
    ),
    lambda r, n: (
        f"{n} returned the {_c(r, PRODUCTS)} because it broke after {r.randint(2, 9)} days."
    ),
]
OBSERVATIONS: list[Callable[[random.Random, str], str]] = [
    lambda r, n: f"{n} usually replies within minutes on {_c(r, WEEKDAYS)} mornings.",
    lambda r, n: f"{n} seems stressed about the {_c(r, EVENTS)} deadline this {_c(r, MONTHS)}.",
    lambda r, n: f"{n} often asks about {_c(r, HOBBIES)} classes near {_c(r, CITIES)}.",
    lambda r, n: f"{n} tends to order {_c(r, FOODS)} when working late on {_c(r, WEEKDAYS)}.",
    lambda r, n: f"{n} mentions their {_c(r, RELATIVES)} a lot when talking about {_c(r, CITIES)}.",
    lambda r, n: f"{n} sounds happier since taking up {_c(r, HOBBIES)} in {_c(r, MONTHS)}.",
]
SUBJECTS: dict[Kind, list[tuple[str, Callable[[random.Random, str], str]]]] = {
    Kind.FACT: [
        ("user.home_city", lambda r, n: f"{n} lives in {_c(r, CITIES)} now, near the {_c(r, LANDMARKS)}."),
        ("user.job", lambda r, n: f"{n} now works as {_a(r, JOBS)} for a firm in {_c(r, CITIES)}."),
    ],
    Kind.PREFERENCE: [
        ("user.favourite_food", lambda r, n: f"{n}'s favourite food is {_c(r, FOODS)}, especially on {_c(r, WEEKDAYS)}s."),
        ("user.reply_language", lambda r, n: f"{n} asked us to always answer in {_c(r, LANGUAGES)} from now on."),
    ],
}  # fmt: skip
TEMPLATES = {
    Kind.FACT: FACTS,
    Kind.PREFERENCE: PREFERENCES,
    Kind.DECISION: DECISIONS,
    Kind.EPISODE: EPISODES,
    Kind.OBSERVATION: OBSERVATIONS,
}
KIND_SHARES = {
    Kind.FACT: 0.30,
    Kind.PREFERENCE: 0.25,
    Kind.EPISODE: 0.20,
    Kind.OBSERVATION: 0.13,
    Kind.DECISION: 0.12,
}
QUESTIONS: list[Callable[[random.Random, str], str]] = [
    lambda r, n: f"Where does {n} live these days?",
    lambda r, n: f"What does {n} like to eat for lunch?",
    lambda r, n: f"Which city did {n} fly to recently?",
    lambda r, n: f"What did we decide about {n}'s {_c(r, PRODUCTS)} refund?",
    lambda r, n: f"Does {n} have any food allergies?",
    lambda r, n: f"What music does {n} listen to at work?",
    lambda r, n: f"How does {n} prefer to be contacted?",
    lambda r, n: f"Which plan is {n} on now?",
    lambda r, n: f"When is the {_c(r, EVENTS)} in {_c(r, CITIES)}?",
    lambda r, n: f"What hobbies does {n} enjoy at the weekend?",
    lambda r, n: f"Who in {n}'s family lives in {_c(r, CITIES)}?",
    lambda r, n: f"What happened with the late {_c(r, PRODUCTS)} delivery?",
    lambda r, n: f"Is {n} worried about the {_c(r, EVENTS)}?",
    lambda r, n: f"What job does {n} do?",
    lambda r, n: f"Which language should we use when replying to {n}?",
    lambda r, n: f"Who likes {_c(r, FOODS)} and {_c(r, HOBBIES)}?",
    lambda r, n: f"Has anyone booked a {_c(r, CUISINES)} restaurant in {_c(r, CITIES)}?",
    lambda r, n: f"What does {n} drink in the morning?",
]


# -- the corpus ------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One Remember the corpus stands for, and when it happened."""

    command: RememberCommand
    at: datetime


def corpus(n: int, seed: int, now: datetime) -> list[Write]:
    """``n`` writes in time order; the same ``seed`` gives the same texts and scopes."""
    rng = random.Random(seed)
    agents, agent_weights = list(AGENTS), list(AGENTS.values())
    users = [f"user-{i:04d}" for i in range(USERS)]
    user_weights = [1 / (rank + 1) ** 0.8 for rank in range(USERS)]
    kinds, kind_weights = list(KIND_SHARES), list(KIND_SHARES.values())
    picked_agents = rng.choices(agents, agent_weights, k=n)
    picked_users = rng.choices(range(USERS), user_weights, k=n)
    picked_kinds = rng.choices(kinds, kind_weights, k=n)
    ages = sorted((rng.random() * 365 for _ in range(n)), reverse=True)
    seen: set[str] = set()
    writes = []
    for i in range(n):
        kind, user = picked_kinds[i], picked_users[i]
        name = NAMES[user % len(NAMES)]
        session = ""
        if kind in (Kind.EPISODE, Kind.OBSERVATION) and rng.random() < 0.6:
            session = f"sess-{user:04d}-{rng.randrange(SESSIONS_PER_USER)}"
        subject = ""
        keyed = SUBJECTS.get(kind)
        for _attempt in range(50):
            if keyed and rng.random() < 0.33:
                subject, template = rng.choice(keyed)
            else:
                subject, template = "", rng.choice(TEMPLATES[kind])
            content = template(rng, name)
            if (tail := rng.choice(TAILS)) and content.endswith("."):
                content = f"{content[:-1]}, {tail}."
            if content not in seen:
                break
        seen.add(content)
        at = now - timedelta(days=ages[i])
        writes.append(
            Write(
                RememberCommand(
                    scope=Scope(TENANT, picked_agents[i], users[user], session),
                    kind=kind,
                    content=content,
                    subject=subject,
                    metadata={"channel": rng.choice(("chat", "email", "voice"))},
                    importance=round(rng.uniform(0.2, 0.9), 2),
                    source=RecordSource(f"task-{i:06d}", rng.randrange(6)),
                    valid_from=at,
                    ttl_seconds=400 * 86400 if kind is Kind.OBSERVATION and i % 3 == 0 else 0,
                ),
                at,
            )
        )
    return writes


@dataclass(frozen=True)
class Query:
    text: str
    agent: str


def questions(count: int, seed: int) -> list[Query]:
    rng = random.Random(seed * 7919 + 1)
    return [
        Query(rng.choice(QUESTIONS)(rng, rng.choice(NAMES)), rng.choice(list(AGENTS)))
        for _ in range(count)
    ]


# -- curation replay ----------------------------------------------------------------


@dataclass
class Curated:
    """What the service would hold after the writes: records and the vector of each."""

    records: dict[str, MemoryRecord] = field(default_factory=dict)
    vector_of: dict[str, int] = field(default_factory=dict)  # record id -> row of the matrix
    outcomes: dict[str, int] = field(default_factory=dict)


def curate(writes: Sequence[Write], vectors: npt.NDArray[np.float32], seed: int) -> Curated:
    """Replay ``MemoryService.remember``'s curation write by write, in time order."""
    ids = random.Random(seed ^ 0x5EED)
    out = Curated()
    by_subject: dict[tuple[Scope, str], str] = {}
    groups: dict[tuple[Scope, Kind], list[str]] = {}  # current records of a scope and kind
    for row, write in enumerate(writes):
        command = write.command
        same_subject = None
        if command.subject and (key := by_subject.get((command.scope, command.subject))):
            same_subject = out.records[key]
        neighbours: list[tuple[MemoryRecord, float]] = []
        group = groups.setdefault((command.scope, command.kind), [])
        if same_subject is None and group:
            similarity = vectors[[out.vector_of[i] for i in group]] @ vectors[row]
            best = np.argsort(-similarity, kind="stable")[:NEIGHBOURS]
            neighbours = [(out.records[group[b]], float(similarity[b])) for b in best]
        decision = decide(
            command, same_subject=same_subject, neighbours=neighbours, thresholds=THRESHOLDS
        )
        out.outcomes[str(decision.outcome)] = out.outcomes.get(str(decision.outcome), 0) + 1
        if decision.outcome in (Outcome.ADDED, Outcome.SUPERSEDED_PREVIOUS):
            record = command.new_record(
                record_id=str(uuid.UUID(int=ids.getrandbits(128), version=4)),
                valid_from=write.at,
                created_at=write.at,
            )
            if decision.outcome is Outcome.SUPERSEDED_PREVIOUS:
                assert decision.existing is not None
                old = supersede(decision.existing, new_id=record.id, at=write.at)
                out.records[old.id] = old
                groups[(old.scope, old.kind)].remove(old.id)
            out.records[record.id] = record
            out.vector_of[record.id] = row
            group.append(record.id)
            if record.subject:
                by_subject[(record.scope, record.subject)] = record.id
        elif decision.outcome is Outcome.MERGED:
            assert decision.existing is not None
            out.records[decision.existing.id] = merge_into(decision.existing, command)
    return out
