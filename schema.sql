-- Herald's only DDL. Idempotent: `herald migrate` applies it on every start, under an advisory lock.
--
-- What an inbox row carries, and why
-- ----------------------------------
-- One event reaches up to millions of users, so the inbox table is where all the write volume
-- goes: a 100,000-recipient fan-out writes 100,000 heap tuples plus one entry per index per row.
-- Everything that is the same for every recipient (type, title, message, tags, payload, ...) is
-- stored once in `events`; an inbox row is only who (`user_id`), what (`event_id`), when
-- (`created_at`, copied from the event so that a user's newest-first page is one index range
-- with no join) and the per-user state (`read_at`). About 60 bytes a row.
--
-- Four indexes, each paid for by a reader path, and small partial ones that hold few rows:
--   primary key (id)                        get/mark/delete one notification by its public id
--   unique (user_id, event_id)              exactly one row per recipient, whatever is retried;
--                                           also drives filtered lists from the events side
--   (user_id, created_at desc, id desc)     a user's newest-first page ("all"), of listed rows
--   same, where read_at is null             a user's unread page; stays small as inboxes age
--   same, of archived rows                  the archive's page (only archived rows)
--   unique (user_id, thread)                a user's thread of a group (only threads)
--   (snoozed_until), (expires_at)           rows whose snooze ends or that expire, by time; each
--                                           holds only the rows that have such a time
--
-- Shown rows: a snoozed row (`snoozed_until` set) is out of the inbox until the sweep brings it
-- back. It is in no list and no count. An archived row (`archived_at` set) is in no count and in no
-- list but the archive's. The two list indexes leave both out (they are partial on
-- `snoozed_until IS NULL AND archived_at IS NULL`), so a page, even a deep one, is still found from
-- the index alone. Every reader statement says those predicates literally, so that PostgreSQL uses
-- them.
--
-- Threads: an event with a `group` updates each recipient's row of that group (`thread`) instead of
-- adding one; the row then shows the group's newest event (`event_id`, `created_at` and the copied
-- `type` and `category` follow it), counts its events (`activity`) and lists its actors through a
-- shared node (`thread_actors`, below).
-- There are no foreign keys on inbox: each would cost a lookup and a row lock per inserted row.
-- Events outlive their rows, and a user is deleted only by an erasure, which removes their rows
-- first (see "Erasure" at the end), so nothing dangles.
--
-- Idempotent fan-out without ON CONFLICT: a fan-out is cut into chunks of user-id ranges, and a
-- chunk's rows are inserted in the same transaction that marks the chunk done in
-- `fanout_chunks`. A retried or duplicated chunk sees the mark and inserts nothing, so the hot
-- INSERT is a plain one (ON CONFLICT DO NOTHING measured ~1.4x slower here); the unique index
-- stays as the safety net.
--
-- Counts: `inbox_counts` holds each user's exact unread and total numbers (of shown rows), changed
-- in the same transaction as the rows they count, with a version that grows on every change. Redis caches
-- them (see service/counts/__init__.py); because the database copy is exact and versioned, the cache can
-- always be rebuilt or repaired by copying, never by recounting. fillfactor 50 keeps those
-- updates HOT (no index writes).

CREATE TABLE IF NOT EXISTS tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    external_id  text NOT NULL,                      -- the id the upstream system uses
    role         text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'manager', 'admin')),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id)
);
-- "audience.all": every active user of a tenant, in id order so it can be cut into ranges.
CREATE INDEX IF NOT EXISTS users_tenant_id ON users (tenant_id, id) WHERE active;

CREATE TABLE IF NOT EXISTS inbox_counts (
    user_id  bigint PRIMARY KEY REFERENCES users (id),
    unread   integer NOT NULL DEFAULT 0,
    total    integer NOT NULL DEFAULT 0,
    version  bigint NOT NULL DEFAULT 0,
    -- unread rows the user has not seen yet (inbox.seen_at IS NULL): the bell's "new" number
    unseen   integer NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
ALTER TABLE inbox_counts ADD COLUMN IF NOT EXISTS unseen integer NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS tokens (
    hash        bytea PRIMARY KEY,                   -- sha256 of the token; the token itself is never stored
    user_id     bigint NOT NULL REFERENCES users (id),
    kind        text NOT NULL CHECK (kind IN ('pat', 'producer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id);

CREATE TABLE IF NOT EXISTS subscriptions (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    topic       text NOT NULL,
    user_id     bigint NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, topic, user_id)          -- a topic's subscribers, in user-id order
);
CREATE INDEX IF NOT EXISTS subscriptions_user ON subscriptions (user_id);

CREATE TABLE IF NOT EXISTS events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        bigint NOT NULL REFERENCES tenants (id),
    external_id      text NOT NULL,                  -- the producer's idempotency key
    type             text NOT NULL,
    title            text,
    message          text NOT NULL,
    category         text,
    tags             text[] NOT NULL DEFAULT '{}',
    trigger_type     text,
    entity_type      text,
    entity_id        text,
    action_url       text,
    actionable       boolean NOT NULL DEFAULT false,
    payload          jsonb,
    audience_users   text[] NOT NULL DEFAULT '{}',
    audience_topics  text[] NOT NULL DEFAULT '{}',
    audience_all     boolean NOT NULL DEFAULT false,
    occurred_at      timestamptz NOT NULL,
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),   -- when Herald accepted it
    fanout_done_at   timestamptz,                          -- set once every chunk is committed
    grp              text,                                 -- the event's `group`: its thread, if any
    actor            text,                                 -- who caused it (threads list their actors)
    actions          jsonb,                                -- the buttons it offers: [{"id", "label", "url"?}]
    UNIQUE (tenant_id, external_id)
);
ALTER TABLE events ADD COLUMN IF NOT EXISTS grp text;
ALTER TABLE events ADD COLUMN IF NOT EXISTS actor text;
ALTER TABLE events ADD COLUMN IF NOT EXISTS actions jsonb;
-- Filtered lists can start from the matching events when a filter is selective.
CREATE INDEX IF NOT EXISTS events_tenant_type ON events (tenant_id, type);
CREATE INDEX IF NOT EXISTS events_tenant_category ON events (tenant_id, category);
CREATE INDEX IF NOT EXISTS events_tags ON events USING gin (tags);
-- Retention removes events by age (see service/store/maintenance.py).
CREATE INDEX IF NOT EXISTS events_occurred ON events (occurred_at);
-- The events of a group still being fanned out: a later event of the group waits for them
-- (service/store/fanout.py, _EARLIER_RUNNING). Holds only the few in flight.
CREATE INDEX IF NOT EXISTS events_group_running ON events (tenant_id, grp, id)
    WHERE grp IS NOT NULL AND fanout_done_at IS NULL;

CREATE TABLE IF NOT EXISTS fanout_chunks (
    event_id  bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    lo        bigint NOT NULL,                       -- user ids lo..hi, inclusive
    hi        bigint NOT NULL,
    rows      integer,                               -- set when the chunk is done
    done_at   timestamptz,
    PRIMARY KEY (event_id, lo)
);

CREATE TABLE IF NOT EXISTS inbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL,
    event_id    bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    read_at     timestamptz,
    seen_at     timestamptz,                         -- when the user opened the bell after it arrived
    snoozed_until timestamptz,                       -- hidden until then (PATCH .../snooze)
    expires_at  timestamptz,                         -- the event's, copied like created_at
    thread      text,                                -- the event's group: one row per (user, group)
    activity    integer NOT NULL DEFAULT 1,          -- distinct events in the thread
    actors_id   bigint,                              -- the thread's actors (thread_actors), if any
    archived_at timestamptz,                         -- put away: out of every list and count
    type        text,                                -- the event's type and category, copied like
    category    text,                                -- created_at, for tab counts (counts/tabs.py)
    interaction text,                                -- the action the reader took last (or 'open')
    interacted_at timestamptz,
    UNIQUE (user_id, event_id)
);
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS seen_at timestamptz;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS snoozed_until timestamptz;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS thread text;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS activity integer NOT NULL DEFAULT 1;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS actors_id bigint;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS archived_at timestamptz;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS type text;     -- NULL on rows written before: read from events
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS category text;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS interaction text;
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS interacted_at timestamptz;
-- The list indexes hold the shown rows only: not snoozed, not archived. Older databases had them
-- over every row, then over unsnoozed rows; they are rebuilt once as the ones below (a table lock
-- while it runs: upgrade in a quiet moment).
DROP INDEX IF EXISTS inbox_user_created;
DROP INDEX IF EXISTS inbox_user_unread;
DROP INDEX IF EXISTS inbox_user_shown;
DROP INDEX IF EXISTS inbox_user_shown_unread;
CREATE INDEX IF NOT EXISTS inbox_user_listed ON inbox (user_id, created_at DESC, id DESC)
    WHERE snoozed_until IS NULL AND archived_at IS NULL;
CREATE INDEX IF NOT EXISTS inbox_user_listed_unread ON inbox (user_id, created_at DESC, id DESC)
    WHERE read_at IS NULL AND snoozed_until IS NULL AND archived_at IS NULL;
-- The archive, for its own list (scalebox `archived=true`); archived rows are few beside the inbox.
CREATE INDEX IF NOT EXISTS inbox_user_archived ON inbox (user_id, created_at DESC, id DESC)
    WHERE archived_at IS NOT NULL AND snoozed_until IS NULL;
-- A user's thread of a group: the row a later event of the group updates. Only threads are in it.
CREATE UNIQUE INDEX IF NOT EXISTS inbox_user_thread ON inbox (user_id, thread) WHERE thread IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_snoozed ON inbox (snoozed_until) WHERE snoozed_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_expiring ON inbox (expires_at) WHERE expires_at IS NOT NULL;
-- Retention finds old rows by time. BRIN: a few pages for the whole table and nearly free to keep
-- up, since rows arrive in about the order of their time.
CREATE INDEX IF NOT EXISTS inbox_created_brin ON inbox USING brin (created_at);

-- Threads' actors. A thread shows its distinct actors, newest first, and how many there are, exactly.
-- Kept per row, the list would be rewritten in every recipient's row on every event of the group:
-- a 100,000-recipient thread with 500 actors would rewrite 500 names 100,000 times. Instead each
-- distinct list is stored once, as a node: (parent list, actor, time) -> the merged list. Every
-- recipient whose thread had the same list (nearly all of them: they got the same events) moves to
-- the same new node, so an event costs one node per distinct history among its recipients, and each
-- row only changes an id. A node's content depends only on its key, so nodes are shared by any
-- thread of any group with that history. Nodes left behind are small and never read again.
CREATE TABLE IF NOT EXISTS thread_actors (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent  bigint NOT NULL,                         -- the node it extends; 0 for none
    actor   text NOT NULL,
    at      timestamptz NOT NULL,                    -- that actor's event's occurred_at
    actors  text[] NOT NULL,                         -- every distinct actor, newest first
    times   timestamptz[] NOT NULL,                  -- each one's latest event time
    UNIQUE (parent, actor, at)
);

-- The list of a node extended by (actor, at): an actor already listed moves to its latest time;
-- among equal times the newer arrival comes first.
CREATE OR REPLACE FUNCTION herald_merge_actors(p_actors text[], p_times timestamptz[], p_actor text, p_at timestamptz)
RETURNS TABLE (actors text[], times timestamptz[])
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(a ORDER BY t DESC, pos), array_agg(t ORDER BY t DESC, pos)
    FROM (
        SELECT DISTINCT ON (a) a, t, pos
        FROM (
            SELECT x.a, x.t, x.pos FROM unnest(p_actors, p_times) WITH ORDINALITY AS x (a, t, pos)
            UNION ALL
            SELECT p_actor, p_at, 0
        ) s
        ORDER BY a, t DESC, pos
    ) d
$$;

-- A statement that finds a thread changed after it began (a concurrent event of its group committed
-- a new actor list it cannot see) stops as a serialization failure, which Herald runs again with a
-- fresh snapshot (service/store/fanout.py, `nodes`).
CREATE OR REPLACE FUNCTION herald_again_if(stale boolean)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF stale THEN
        RAISE EXCEPTION 'a thread changed after this statement began' USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN true;
END
$$;

-- What a user muted: event types, categories, and topics. A row exists only for a user who muted
-- something (an empty PUT deletes it), so the fan-out's anti-join against this table finds nothing
-- for nearly every recipient, and costs about nothing while the table is small. The fan-out only
-- reads it; it is written by a user's own PUT, so its foreign key costs nothing on the hot path.
CREATE TABLE IF NOT EXISTS preferences (
    user_id           bigint PRIMARY KEY REFERENCES users (id),
    muted_types       text[] NOT NULL DEFAULT '{}',
    muted_categories  text[] NOT NULL DEFAULT '{}',
    muted_topics      text[] NOT NULL DEFAULT '{}',
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Erasure (DELETE /v1/admin/users/{user}, `herald admin erase-user`; service/erasure.py). A user
-- being erased is marked first, in one statement: `active = false` (so the fan-out skips them and
-- their tokens are refused) and `erasing_since`, which is what says the erasure is asked for and
-- not finished. Their rows are then deleted in batches and, last, everything else of theirs and
-- the user row itself. The mark outlives a worker that dies midway: whoever runs the erasure next
-- (the job run again, or the periodic pass that looks for marked users) goes on from what is left.
ALTER TABLE users ADD COLUMN IF NOT EXISTS erasing_since timestamptz;
-- The periodic pass's question, "who is still being erased?": an index of only those users.
CREATE INDEX IF NOT EXISTS users_erasing ON users (erasing_since) WHERE erasing_since IS NOT NULL;

-- Webhooks out (docs/api.md, "Webhooks"): endpoints a tenant's admin registered, and the outbox of
-- what each of them is owed.
--
-- A change and its webhooks are recorded together: the statement that changes inbox rows (or marks
-- an event's fan-out done) also inserts one `webhook_deliveries` row per registered webhook that
-- takes the change's type (service/store/outbox.py), so no crash between the two can lose one. A
-- tenant without webhooks costs that statement one probe of `webhooks_live` and writes nothing.
-- Workers then claim due rows (SKIP LOCKED, a lease in `next_at`), POST them, and record the
-- outcome (service/webhooks/courier.py). No foreign keys on the outbox: each would cost a lookup
-- and a row lock on the webhook for every change; deleting a webhook ends its pending rows itself.
CREATE TABLE IF NOT EXISTS webhooks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    url         text NOT NULL,
    events      text[] NOT NULL,                     -- the types it takes
    secret      bytea NOT NULL,                      -- the HMAC key; shown once as whsec_ + base64
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX IF NOT EXISTS webhooks_live ON webhooks (tenant_id) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       bigint NOT NULL,
    tenant_id        bigint NOT NULL,
    user_id          bigint,                         -- whose inbox changed; null for event.delivered
    type             text NOT NULL,
    -- The Standard Webhooks message id (`webhook-id`, the body's `id`): the same on every retry.
    msg_id           text NOT NULL DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    data             jsonb,                          -- inbox.bulk and event.delivered: the `data` object
    snapshot         jsonb,                          -- notification.*: the inbox row as the change left it
    body             bytea,                          -- rendered at the first attempt, sent as is after
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    tries            integer NOT NULL DEFAULT 0,     -- attempts started; also the claim's fencing token
    next_at          timestamptz NOT NULL DEFAULT now(),  -- due then; while an attempt runs, its lease
    last_error       text,
    last_status      integer,                        -- the HTTP status of the last answer, if any
    created_at       timestamptz NOT NULL DEFAULT now(),  -- the change's time (the body's occurred_at)
    last_attempt_at  timestamptz,
    delivered_at     timestamptz
);
-- Due rows, per webhook, so that each claim takes a share of every endpoint's (one slow endpoint
-- cannot fill a claim); and by time alone, so that a claim finds out at once whether anything is
-- due at all (an idle worker asks five times a second). Both hold only pending rows.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (webhook_id, next_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_next ON webhook_deliveries (next_at) WHERE status = 'pending';
-- GET /v1/admin/webhooks/{id}/deliveries: the latest first.
CREATE INDEX IF NOT EXISTS webhook_deliveries_latest ON webhook_deliveries (webhook_id, id DESC);
-- Erasing a user removes the deliveries naming them.
CREATE INDEX IF NOT EXISTS webhook_deliveries_user ON webhook_deliveries (user_id) WHERE user_id IS NOT NULL;
-- Finished rows are pruned by age (service/webhooks/courier.py); BRIN, as rows arrive in time order.
CREATE INDEX IF NOT EXISTS webhook_deliveries_created_brin ON webhook_deliveries USING brin (created_at);
