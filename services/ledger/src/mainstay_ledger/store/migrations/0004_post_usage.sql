-- Posting one priced usage in one round trip: the hot path of the ledger.
--
-- The same rules as mainstay_ledger.engine (capture from the task's pending
-- transfer, pay the expense account, post what the hold cannot cover from the
-- agent's account, limit flags checked before commit), applied to the rows
-- of one usage inside the caller's transaction. Refusals raise SQLSTATE
-- 'ML422' with the rule's code in DETAIL; nothing of the usage remains.
--
-- Prices the usage with price_usage (or the producer's list price per call
-- when the book has none) and returns whether the usage id was new (a repeat
-- posts nothing), its currency, cost and price version, the part the hold
-- covered, whether this usage ran an open hold out, and the hold after it.

-- The cost of one usage with the price in force when it happened: the
-- tenant's own price, else the one for every tenant; each part rounded up to
-- a whole micro-unit (mainstay_ledger.pricebook.cost is the same formula).
-- No row when the item has no price in force.
CREATE FUNCTION price_usage(
    p_tenant text,
    p_item text,
    p_at timestamptz,
    p_input bigint,
    p_output bigint,
    p_cached bigint,
    p_calls bigint
) RETURNS TABLE (cost numeric, version integer, currency text)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT ceil(p_input::numeric * input_per_mtok / 1000000)
         + ceil(p_output::numeric * output_per_mtok / 1000000)
         + ceil(p_cached::numeric * cached_per_mtok / 1000000)
         + p_calls::numeric * per_call,
         version, currency
    FROM prices
    WHERE item = p_item AND tenant IN (p_tenant, '') AND effective_from <= p_at
    ORDER BY (tenant = p_tenant) DESC, effective_from DESC, version DESC
    LIMIT 1
$$;

-- Add to the balances of accounts (parallel arrays: id, then the change of
-- debits_pending, debits_posted, credits_pending, credits_posted), refusing
-- (SQLSTATE 'ML422', the rule in DETAIL) a change that breaks a limit flag.
CREATE FUNCTION add_balances(
    p_ids text[], p_dq bigint[], p_dp bigint[], p_cq bigint[], p_cp bigint[]
) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_broken text;
    v_rule   text;
BEGIN
    WITH changed AS (
        UPDATE accounts a SET debits_pending = a.debits_pending + d.dq,
            debits_posted = a.debits_posted + d.dp, credits_pending = a.credits_pending + d.cq,
            credits_posted = a.credits_posted + d.cp
        FROM unnest(p_ids, p_dq, p_dp, p_cq, p_cp) AS d(id, dq, dp, cq, cp)
        WHERE a.id = d.id
        RETURNING a.id, CASE
            WHEN a.flags @> '{debits_must_not_exceed_credits}'
                 AND a.debits_pending + a.debits_posted > a.credits_posted
                THEN 'exceeds_credits'
            WHEN a.flags @> '{credits_must_not_exceed_debits}'
                 AND a.credits_pending + a.credits_posted > a.debits_posted
                THEN 'exceeds_debits'
        END AS rule
    )
    SELECT id, rule INTO v_broken, v_rule FROM changed WHERE rule IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'ML422', DETAIL = v_rule,
            MESSAGE = format('account ''%s'' would break its limit flag (%s)', v_broken, v_rule);
    END IF;
END
$$;

CREATE FUNCTION post_usage(
    p_tenant text,
    p_usage_id text,
    p_task_id text,
    p_agent text,
    p_kind text,
    p_resource text,
    p_step integer,
    p_input bigint,
    p_output bigint,
    p_cached bigint,
    p_calls bigint,
    p_list_price bigint,
    p_default_currency text,
    p_occurred_at timestamptz
) RETURNS TABLE (
    fresh boolean,
    currency text,
    cost bigint,
    price_version integer,
    covered bigint,
    exhausted boolean,
    hold holds
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    h            holds%ROWTYPE;
    has_hold     boolean;
    pending      transfers%ROWTYPE;
    v_agent      text := p_agent;
    v_team       text := '';
    v_left       bigint := 0;
    v_covered    bigint := 0;
    v_overrun    bigint;
    v_exhausted  boolean := false;
    v_currency   text;
    v_price_currency text;
    v_cost       bigint;
    v_version    integer;
    v_price      numeric;
    v_expense    text;
    v_payer      text;
    v_base       text := format('%s/usage/%s', p_tenant, p_usage_id);
    v_detail     jsonb := jsonb_build_object('usage_id', p_usage_id, 'resource', p_resource);
    v_code       text := 'usage.' || p_kind;
BEGIN
    SELECT * INTO h FROM holds WHERE tenant = p_tenant AND task_id = p_task_id FOR UPDATE;
    has_hold := FOUND;
    SELECT p.cost, p.version, p.currency INTO v_price, v_version, v_price_currency
    FROM price_usage(p_tenant, p_kind || ':' || p_resource, p_occurred_at, p_input, p_output,
                     p_cached, p_calls) AS p;
    IF NOT FOUND THEN
        IF p_list_price IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'ML404', DETAIL = 'price',
                MESSAGE = format('item: no price for ''%s:%s'' in force at %s', p_kind,
                    p_resource, p_occurred_at);
        END IF;
        v_price := p_list_price::numeric * greatest(p_calls, 1);
    END IF;
    IF v_price > 9223372036854775807 THEN
        RAISE EXCEPTION USING ERRCODE = 'ML400', DETAIL = 'cost',
            MESSAGE = format('usage ''%s'': its cost %s is too large', p_usage_id, v_price);
    END IF;
    v_cost := v_price::bigint;
    -- the price's currency; a list price is in the hold's (or the default) currency
    v_currency := coalesce(v_price_currency, CASE WHEN has_hold THEN h.currency END, p_default_currency);
    v_expense := format('%s/expense/%s/%s/%s', p_tenant, p_kind, p_resource, v_currency);
    IF has_hold THEN
        IF h.state NOT IN ('open', 'exhausted', 'closing') THEN
            RAISE EXCEPTION USING ERRCODE = 'ML422', DETAIL = 'hold_' || h.state,
                MESSAGE = format('usage ''%s'': the hold of task ''%s'' is %s%s', p_usage_id,
                    p_task_id, h.state, CASE WHEN h.reason <> '' THEN ' (' || h.reason || ')' ELSE '' END);
        END IF;
        IF h.currency <> v_currency THEN
            RAISE EXCEPTION USING ERRCODE = 'ML400', DETAIL = 'currency',
                MESSAGE = format('currency: the usage is priced in %s, the hold of task ''%s'' is in %s',
                    v_currency, p_task_id, h.currency);
        END IF;
        v_agent := h.agent;
        v_team := h.team;
        v_left := h.cap - h.spent;
        v_covered := least(v_cost, v_left);
    END IF;
    INSERT INTO usage (tenant, usage_id, task_id, agent, team, kind, resource, step, input_tokens,
        output_tokens, cached_tokens, calls, currency, cost, covered, price_version, occurred_at)
    VALUES (p_tenant, p_usage_id, p_task_id, v_agent, v_team, p_kind, p_resource, p_step, p_input,
        p_output, p_cached, p_calls, v_currency, v_cost, v_covered, v_version, p_occurred_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, v_currency, v_cost, v_version, 0::bigint, false,
            CASE WHEN has_hold THEN h END;
        RETURN;
    END IF;
    v_overrun := v_cost - v_covered;
    v_payer := format('%s/agent/%s/%s', p_tenant, v_agent, v_currency);
    IF v_cost > 0 THEN
        -- in id order, as every posting locks accounts; created on first use
        PERFORM 1 FROM accounts WHERE id IN (v_expense, v_payer, h.account, h.agent_account)
            ORDER BY id FOR UPDATE;
        IF NOT EXISTS (SELECT 1 FROM accounts WHERE id = v_expense)
           OR NOT EXISTS (SELECT 1 FROM accounts WHERE id = v_payer) THEN
            INSERT INTO accounts (id, tenant, kind, currency)
            VALUES (v_expense, p_tenant, 'expense:' || p_kind, v_currency),
                   (v_payer, p_tenant, 'agent', v_currency)
            ON CONFLICT (id) DO NOTHING;
            PERFORM 1 FROM accounts WHERE id IN (v_expense, v_payer) ORDER BY id FOR UPDATE;
        END IF;
    END IF;
    IF v_covered > 0 THEN
        SELECT * INTO pending FROM transfers WHERE id = h.pending_id FOR UPDATE;
        IF pending.state <> 'open' THEN
            RAISE EXCEPTION USING ERRCODE = 'ML422', DETAIL = 'pending_resolved',
                MESSAGE = format('hold ''%s'' was already %s', pending.id, pending.state);
        END IF;
        IF pending.timeout_at <= now() THEN
            RAISE EXCEPTION USING ERRCODE = 'ML422', DETAIL = 'pending_expired',
                MESSAGE = format('hold ''%s'' timed out', pending.id);
        END IF;
        IF v_covered > pending.remaining THEN
            RAISE EXCEPTION USING ERRCODE = 'ML422', DETAIL = 'exceeds_pending',
                MESSAGE = format('hold ''%s'' has %s left, %s asked', pending.id,
                    pending.remaining, v_covered);
        END IF;
        -- capture (pending -> posted on both sides), then pay the hold account out
        PERFORM add_balances(ARRAY[pending.debit_account, h.account, v_expense],
            ARRAY[-v_covered, 0, 0], ARRAY[v_covered, v_covered, 0],
            ARRAY[0, -v_covered, 0], ARRAY[0, v_covered, v_covered]);
        UPDATE transfers SET remaining = remaining - v_covered WHERE id = pending.id;
        INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency, code,
            kind, pending_id, task_id, step, detail)
        VALUES (v_base || '/capture', p_tenant, pending.debit_account, pending.credit_account,
                v_covered, v_currency, v_code, 'capture', pending.id, p_task_id, p_step, v_detail),
               (v_base || '/spend', p_tenant, h.account, v_expense, v_covered, v_currency, v_code,
                'posted', NULL, p_task_id, p_step, v_detail);
    END IF;
    IF v_overrun > 0 THEN
        PERFORM add_balances(ARRAY[v_payer, v_expense], ARRAY[0, 0], ARRAY[v_overrun, 0],
            ARRAY[0, 0], ARRAY[0, v_overrun]);
        INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency, code,
            kind, task_id, step, detail)
        VALUES (v_base || CASE WHEN has_hold THEN '/overrun' ELSE '/unreserved' END, p_tenant,
                v_payer, v_expense, v_overrun, v_currency,
                CASE WHEN has_hold THEN 'usage.overrun' ELSE 'usage.unreserved' END,
                'posted', p_task_id, p_step, v_detail);
    END IF;
    IF has_hold THEN
        v_exhausted := h.state = 'open' AND (v_overrun > 0 OR v_covered = v_left);
        UPDATE holds SET spent = spent + v_covered, overrun = overrun + v_overrun,
            state = CASE WHEN v_exhausted THEN 'exhausted' ELSE state END
            WHERE tenant = p_tenant AND task_id = p_task_id
            RETURNING * INTO h;
    END IF;
    RETURN QUERY SELECT true, v_currency, v_cost, v_version, v_covered, v_exhausted,
        CASE WHEN has_hold THEN h END;
END
$$;

-- Transfers are read by task (holds, reports) and by id; per-account indexes
-- cost every posting two more index writes and serve no query.
DROP INDEX transfers_debit;
DROP INDEX transfers_credit;
