import Foundation
import LHProto

/// The PostgreSQL schema, as migrations applied in order (each once, in one
/// transaction, recorded in `lh_migrations`), like the SQLite store's.
/// A database with a migration this build does not know was made by a newer
/// lh-server and is refused, untouched.
enum PostgresSchema {
    /// The format this build writes.
    static let format = 1

    static let running = Littlehorse_TaskStatus.taskRunning.rawValue

    static let migrations: [(name: String, statements: [String])] = [
        ("v1-initial", v1),
        ("v2-fair-share", v2),
    ]

    /// Fair shares: a claim takes ownerless partitions only up to
    /// ⌈partitions / live members⌉; a member over its share releases the
    /// rest (`lh_release`), after its commits in flight; members record
    /// their gRPC address too (LittleHorse's workers connect to every
    /// member's).
    static let v2: [String] = [
        "ALTER TABLE lh_members ADD COLUMN grpc_address text NOT NULL DEFAULT ''",
        "DROP FUNCTION lh_claim(text, float8)",
        // Claiming partitions (one claimer at a time across the cluster):
        // members whose lease ran out more than a second ago are marked dead
        // (this waits for their write in flight, see lh_fence), then
        // partitions without a live owner become the caller's, epoch + 1,
        // lowest first, up to the caller's fair share (`p_fair`; else all).
        // Returns the claimed ones, whether each was a dead member's (not
        // released), and the number of live members (p = -1 when none was
        // claimed).
        """
        CREATE FUNCTION lh_claim(p_member text, p_ttl float8, p_fair boolean)
        RETURNS TABLE (p int, epoch bigint, live int, from_dead boolean)
        LANGUAGE plpgsql AS $$
        DECLARE
            n_live int;
            n_total int;
            n_mine int;
            room int;
        BEGIN
            PERFORM pg_advisory_xact_lock(7405);
            -- Not the caller: its lease is renewed here (as its renewal
            -- would), unless another member marked it dead already.
            UPDATE lh_members SET state = 'dead', ended_at = now()
             WHERE state = 'live' AND lease_until < now() - interval '1 second' AND id <> p_member;
            UPDATE lh_members SET lease_until = now() + make_interval(secs => p_ttl) WHERE id = p_member AND state = 'live';
            IF NOT FOUND THEN
                RAISE EXCEPTION 'member % is not live: it may not claim partitions', p_member USING ERRCODE = 'LHF01';
            END IF;
            SELECT count(*) INTO n_live FROM lh_members WHERE state = 'live';
            SELECT count(*), count(*) FILTER (WHERE owner = p_member) INTO n_total, n_mine FROM lh_partitions;
            room := CASE WHEN p_fair THEN (n_total + n_live - 1) / n_live ELSE n_total END - n_mine;
            IF room > 0 THEN
                RETURN QUERY
                UPDATE lh_partitions l SET owner = p_member, epoch = l.epoch + 1
                  FROM (SELECT x.p, x.owner IS NOT NULL AS dead_owner FROM lh_partitions x
                         WHERE x.owner IS NULL OR NOT EXISTS (SELECT 1 FROM lh_members m WHERE m.id = x.owner AND m.state = 'live')
                         ORDER BY x.p LIMIT room) AS free
                 WHERE l.p = free.p
                RETURNING l.p, l.epoch, n_live, free.dead_owner;
            END IF;
            IF NOT FOUND OR room <= 0 THEN
                RETURN QUERY SELECT -1, 0::bigint, n_live, false;
            END IF;
        END $$
        """,
        // A release: waits for the member's commits in flight (they hold its
        // row FOR SHARE, see lh_fence); from then on its commits to these
        // partitions are refused, and the next claimer bumps their epochs.
        """
        CREATE FUNCTION lh_release(p_member text, p_parts int[]) RETURNS int LANGUAGE plpgsql AS $$
        DECLARE
            n int;
        BEGIN
            PERFORM 1 FROM lh_members WHERE id = p_member FOR UPDATE;
            UPDATE lh_partitions SET owner = NULL WHERE owner = p_member AND p = ANY(p_parts);
            GET DIAGNOSTICS n = ROW_COUNT;
            RETURN n;
        END $$
        """,
    ]

    static let v1: [String] = [
        """
        CREATE TABLE lh_cluster (id int PRIMARY KEY CHECK (id = 1), partitions int NOT NULL, format int NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())
        """,
        // One row per server process (a new id at each start). Leases are on
        // PostgreSQL's clock: the servers' clocks never matter.
        """
        CREATE TABLE lh_members (id text PRIMARY KEY, address text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(),
            lease_until timestamptz NOT NULL, state text NOT NULL CHECK (state IN ('live', 'left', 'dead')),
            ended_at timestamptz)
        """,
        "CREATE TABLE lh_partitions (p int PRIMARY KEY, owner text, epoch bigint NOT NULL DEFAULT 0)",
        "CREATE SEQUENCE lh_commit_seq",
        "CREATE TABLE task_defs (name text PRIMARY KEY, body bytea NOT NULL)",
        "CREATE TABLE external_event_defs (name text PRIMARY KEY, body bytea NOT NULL)",
        """
        CREATE TABLE wf_specs (name text NOT NULL, major int NOT NULL, revision int NOT NULL, body bytea NOT NULL,
            PRIMARY KEY (name, major, revision))
        """,
        // Bodies are rewritten in place on every command: room on each page
        // keeps those updates HOT (no index entries written).
        """
        CREATE TABLE wf_runs (id text PRIMARY KEY, partition int NOT NULL, wf_spec_name text NOT NULL, major int NOT NULL,
            revision int NOT NULL, status int NOT NULL, start_time float8 NOT NULL, body bytea NOT NULL) WITH (fillfactor = 80)
        """,
        "CREATE INDEX wf_runs_by_spec ON wf_runs (wf_spec_name, status, start_time, id)",
        "CREATE INDEX wf_runs_by_start ON wf_runs (start_time, id)",
        """
        CREATE TABLE task_runs (wf_run_id text NOT NULL, guid text NOT NULL, partition int NOT NULL, task_def text NOT NULL,
            status int NOT NULL, scheduled_at float8 NOT NULL, PRIMARY KEY (wf_run_id, guid)) WITH (fillfactor = 80)
        """,
        "CREATE INDEX task_runs_by_def ON task_runs (task_def, status, scheduled_at)",
        "CREATE INDEX task_runs_running ON task_runs (partition) WHERE status = \(running)",
        """
        CREATE TABLE variables (wf_run_id text NOT NULL, thread int NOT NULL, name text NOT NULL, wf_spec_name text NOT NULL,
            value_key text, PRIMARY KEY (wf_run_id, thread, name))
        """,
        "CREATE INDEX variables_by_value ON variables (name, value_key, wf_spec_name)",
        """
        CREATE TABLE task_queue (wf_run_id text NOT NULL, guid text NOT NULL, partition int NOT NULL, task_def text NOT NULL,
            attempt int NOT NULL, commit_seq bigint NOT NULL, ord int NOT NULL, PRIMARY KEY (wf_run_id, guid))
        """,
        "CREATE INDEX task_queue_by_partition ON task_queue (partition, commit_seq, ord)",
        """
        CREATE TABLE timers (wf_run_id text NOT NULL, key text NOT NULL, partition int NOT NULL, due float8 NOT NULL,
            PRIMARY KEY (wf_run_id, key))
        """,
        "CREATE INDEX timers_by_partition ON timers (partition, due)",
        """
        CREATE TABLE orphan_events (wf_run_id text NOT NULL, guid text NOT NULL, partition int NOT NULL,
            commit_seq bigint NOT NULL, ord int NOT NULL, body bytea NOT NULL, PRIMARY KEY (wf_run_id, guid))
        """,
        // Every commit of a member (its time on PostgreSQL's clock) when
        // lh_commit_log is on (tests: no commit after the member was marked dead).
        "CREATE TABLE lh_commit_log (member text NOT NULL, at timestamptz NOT NULL)",
        "CREATE TABLE lh_settings (key text PRIMARY KEY, value text NOT NULL)",
        // The fence, first in every write of a member: its row is share-locked
        // (a takeover's UPDATE to 'dead' waits for a write in flight, and any
        // later write sees 'dead'), its lease must run, and it must still own
        // every partition it writes, at the epoch it claimed.
        """
        CREATE FUNCTION lh_fence(p_member text, p_parts int[], p_epochs bigint[]) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            st text;
            lu timestamptz;
        BEGIN
            SELECT state, lease_until INTO st, lu FROM lh_members WHERE id = p_member FOR SHARE;
            IF NOT FOUND OR st <> 'live' THEN
                RAISE EXCEPTION 'member % is %: it lost its partitions and may not write', p_member, coalesce(st, 'unknown')
                    USING ERRCODE = 'LHF01';
            END IF;
            IF lu <= now() THEN
                RAISE EXCEPTION 'the lease of member % ran out at %', p_member, lu USING ERRCODE = 'LHF03';
            END IF;
            IF EXISTS (SELECT 1 FROM unnest(p_parts, p_epochs) AS t(p, e) LEFT JOIN lh_partitions l ON l.p = t.p
                       WHERE l.owner IS DISTINCT FROM p_member OR l.epoch <> t.e) THEN
                RAISE EXCEPTION 'member % no longer owns a partition it writes (or owns it at another epoch)', p_member
                    USING ERRCODE = 'LHF02';
            END IF;
        END $$
        """,
        // One group commit: the fence, then every table's net change from
        // arrays (the caller folded its batches to one change per key).
        """
        CREATE FUNCTION lh_commit(
            p_member text, p_parts int[], p_epochs bigint[],
            d_ids text[],
            w_ids text[], w_part int[], w_spec text[], w_major int[], w_rev int[], w_status int[], w_start float8[], w_body bytea[],
            t_wf text[], t_guid text[], t_part int[], t_def text[], t_status int[], t_sched float8[],
            v_wf text[], v_thread int[], v_name text[], v_spec text[], v_key text[],
            qd_wf text[], qd_guid text[],
            qe_wf text[], qe_guid text[], qe_part int[], qe_def text[], qe_attempt int[],
            td_wf text[], td_key text[],
            ts_wf text[], ts_key text[], ts_part int[], ts_due float8[],
            oc_wf text[],
            oa_wf text[], oa_guid text[], oa_part int[], oa_body bytea[]
        ) RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            seq bigint;
        BEGIN
            PERFORM lh_fence(p_member, p_parts, p_epochs);
            seq := nextval('lh_commit_seq');
            IF cardinality(d_ids) > 0 THEN
                DELETE FROM wf_runs WHERE id = ANY(d_ids);
                DELETE FROM task_runs WHERE wf_run_id = ANY(d_ids);
                DELETE FROM variables WHERE wf_run_id = ANY(d_ids);
                DELETE FROM task_queue WHERE wf_run_id = ANY(d_ids);
                DELETE FROM timers WHERE wf_run_id = ANY(d_ids);
                DELETE FROM orphan_events WHERE wf_run_id = ANY(d_ids);
            END IF;
            IF cardinality(w_ids) > 0 THEN
                INSERT INTO wf_runs (id, partition, wf_spec_name, major, revision, status, start_time, body)
                SELECT * FROM unnest(w_ids, w_part, w_spec, w_major, w_rev, w_status, w_start, w_body)
                ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body;
            END IF;
            IF cardinality(t_wf) > 0 THEN
                INSERT INTO task_runs (wf_run_id, guid, partition, task_def, status, scheduled_at)
                SELECT * FROM unnest(t_wf, t_guid, t_part, t_def, t_status, t_sched)
                ON CONFLICT (wf_run_id, guid) DO UPDATE SET status = excluded.status, scheduled_at = excluded.scheduled_at;
            END IF;
            IF cardinality(v_wf) > 0 THEN
                INSERT INTO variables (wf_run_id, thread, name, wf_spec_name, value_key)
                SELECT wf, th, n, sp, NULLIF(k, '') FROM unnest(v_wf, v_thread, v_name, v_spec, v_key) AS v(wf, th, n, sp, k)
                ON CONFLICT (wf_run_id, thread, name) DO UPDATE SET value_key = excluded.value_key;
            END IF;
            IF cardinality(qd_wf) > 0 THEN
                DELETE FROM task_queue q USING unnest(qd_wf, qd_guid) AS d(wf, guid) WHERE q.wf_run_id = d.wf AND q.guid = d.guid;
            END IF;
            IF cardinality(qe_wf) > 0 THEN
                INSERT INTO task_queue (wf_run_id, guid, partition, task_def, attempt, commit_seq, ord)
                SELECT wf, guid, part, def, att, seq, o::int
                FROM unnest(qe_wf, qe_guid, qe_part, qe_def, qe_attempt) WITH ORDINALITY AS e(wf, guid, part, def, att, o)
                ON CONFLICT (wf_run_id, guid) DO UPDATE SET task_def = excluded.task_def, attempt = excluded.attempt,
                    commit_seq = excluded.commit_seq, ord = excluded.ord;
            END IF;
            IF cardinality(td_wf) > 0 THEN
                DELETE FROM timers t USING unnest(td_wf, td_key) AS d(wf, k) WHERE t.wf_run_id = d.wf AND t.key = d.k;
            END IF;
            IF cardinality(ts_wf) > 0 THEN
                INSERT INTO timers (wf_run_id, key, partition, due) SELECT * FROM unnest(ts_wf, ts_key, ts_part, ts_due)
                ON CONFLICT (wf_run_id, key) DO UPDATE SET due = excluded.due;
            END IF;
            IF cardinality(oc_wf) > 0 THEN
                DELETE FROM orphan_events WHERE wf_run_id = ANY(oc_wf);
            END IF;
            IF cardinality(oa_wf) > 0 THEN
                INSERT INTO orphan_events (wf_run_id, guid, partition, commit_seq, ord, body)
                SELECT wf, guid, part, seq, o::int, body
                FROM unnest(oa_wf, oa_guid, oa_part, oa_body) WITH ORDINALITY AS a(wf, guid, part, body, o)
                ON CONFLICT (wf_run_id, guid) DO UPDATE SET body = excluded.body, commit_seq = excluded.commit_seq,
                    ord = excluded.ord;
            END IF;
            IF EXISTS (SELECT 1 FROM lh_settings WHERE key = 'commit_log' AND value = 'on') THEN
                INSERT INTO lh_commit_log (member, at) VALUES (p_member, clock_timestamp());
            END IF;
            RETURN seq;
        END $$
        """,
        // Metadata (TaskDef, ExternalEventDef, WfSpec), fenced like commits.
        """
        CREATE FUNCTION lh_put_metadata(p_member text, p_kind text, p_name text, p_major int, p_revision int, p_body bytea)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM lh_fence(p_member, '{}'::int[], '{}'::bigint[]);
            IF p_kind = 'task_def' THEN
                INSERT INTO task_defs (name, body) VALUES (p_name, p_body) ON CONFLICT (name) DO UPDATE SET body = excluded.body;
            ELSIF p_kind = 'external_event_def' THEN
                INSERT INTO external_event_defs (name, body) VALUES (p_name, p_body)
                ON CONFLICT (name) DO UPDATE SET body = excluded.body;
            ELSE
                INSERT INTO wf_specs (name, major, revision, body) VALUES (p_name, p_major, p_revision, p_body)
                ON CONFLICT (name, major, revision) DO UPDATE SET body = excluded.body;
            END IF;
        END $$
        """,
        // Claiming partitions (one at a time across the cluster): members
        // whose lease ran out more than a second ago are marked dead (this
        // waits for their write in flight, see lh_fence), then every
        // partition without a live owner becomes the caller's, epoch + 1.
        """
        CREATE FUNCTION lh_claim(p_member text, p_ttl float8) RETURNS TABLE (p int, epoch bigint) LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(7405);
            UPDATE lh_members SET state = 'dead', ended_at = now()
             WHERE state = 'live' AND lease_until < now() - interval '1 second';
            UPDATE lh_members SET lease_until = now() + make_interval(secs => p_ttl) WHERE id = p_member AND state = 'live';
            IF NOT FOUND THEN
                RAISE EXCEPTION 'member % is not live: it may not claim partitions', p_member USING ERRCODE = 'LHF01';
            END IF;
            RETURN QUERY
            UPDATE lh_partitions l SET owner = p_member, epoch = l.epoch + 1
             WHERE l.owner IS NULL OR NOT EXISTS (SELECT 1 FROM lh_members m WHERE m.id = l.owner AND m.state = 'live')
            RETURNING l.p, l.epoch;
        END $$
        """,
    ]
}
