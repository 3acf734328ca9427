//! The fleet's PostgreSQL session: membership, one advisory lock per owned instance, and the
//! watermarks in `ha_fleet_instances`. Session-level advisory locks belong to the connection:
//! when the process dies or its connection is lost, PostgreSQL releases them, and that is what
//! lets the other processes take the instances over.

use std::time::Duration;

use tokio_postgres::Client;

use crate::sink::postgres::Connector;

/// How long one statement may take before the session counts as lost.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The lock keys: 64-bit hashes PostgreSQL computes (`hashtextextended`, PostgreSQL 11 and later)
/// of texts that name the fleet (and the instance), so fleets sharing a database stay apart.
const MEMBER_KEY: &str = "hashtextextended('ha-ingestor fleet members' || chr(31) || $1, 0)";
const INSTANCE_KEY: &str =
    "hashtextextended('ha-ingestor fleet instance' || chr(31) || $1 || chr(31) || $2, 0)";

/// The fleet's table: per instance, the time up to which every state is in `ha_states`, as the
/// last owner saw it.
const FLEET_DDL: &str = "
CREATE TABLE IF NOT EXISTS ha_fleet_instances (
    fleet          text NOT NULL,
    instance       text NOT NULL,
    complete_until timestamptz NOT NULL,
    owner          text NOT NULL,
    updated        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fleet, instance)
)";

/// A live session, a member of `fleet`.
pub struct Session {
    client: Client,
    task: tokio::task::JoinHandle<()>,
    fleet: String,
    /// Says who owns an instance (`ha_fleet_instances.owner`): host and process id.
    owner: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing the connection releases every lock it holds.
        self.task.abort();
    }
}

/// How long connecting may take (the dsn's own connect timeout covers only the socket).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// `f`, as a statement of the session: its error text (never the dsn), or a timeout.
async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    within(STATEMENT_TIMEOUT, what, f).await
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| format!("{what}: {}", crate::sink::postgres::error_text(&e))),
        Err(_) => Err(format!("{what}: no answer within {}s", limit.as_secs())),
    }
}

impl Session {
    /// Connects, creates the fleet's table and joins the fleet.
    pub async fn open(connector: &Connector, fleet: &str, owner: &str) -> Result<Self, String> {
        let (client, task) = within(
            CONNECT_TIMEOUT,
            &format!("connecting to PostgreSQL at {}", connector.target()),
            connector.connect(),
        )
        .await?;
        let session = Session {
            client,
            task,
            fleet: fleet.to_string(),
            owner: owner.to_string(),
        };
        // The server notices a vanished client (a network cut, not a closed socket) within about
        // 25 s instead of its default two hours, and releases its locks; ignored on sockets. The
        // application name says which process holds the session (pg_stat_activity).
        timed(
            "setting TCP keepalives",
            session.client.batch_execute(
                "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                 SET tcp_keepalives_count = 3",
            ),
        )
        .await?;
        timed(
            "naming the session",
            session.client.execute(
                "SELECT set_config('application_name', $1, false)",
                &[&format!("ha-ingestor fleet {owner}")],
            ),
        )
        .await?;
        // Processes starting together race to create the table; the transaction lock lines them up.
        timed(
            "creating ha_fleet_instances",
            session.client.batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('ha-ingestor fleet ddl', 0)); \
                 {FLEET_DDL}; COMMIT"
            )),
        )
        .await?;
        timed(
            "joining the fleet",
            session.client.execute(
                &format!("SELECT pg_advisory_lock_shared({MEMBER_KEY})"),
                &[&session.fleet],
            ),
        )
        .await?;
        Ok(session)
    }

    /// How many processes are members of the fleet now (this one included).
    pub async fn members(&self) -> Result<u32, String> {
        let row = timed(
            "counting the fleet's members",
            self.client.query_one(
                &format!(
                    "SELECT count(*) FROM pg_locks l, (SELECT {MEMBER_KEY} AS k) m
                     WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ShareLock'
                       AND l.objsubid = 1
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND l.classid::int8 = (m.k >> 32) & 4294967295
                       AND l.objid::int8 = m.k & 4294967295"
                ),
                &[&self.fleet],
            ),
        )
        .await?;
        Ok(u32::try_from(row.get::<_, i64>(0))
            .unwrap_or(u32::MAX)
            .max(1))
    }

    /// Takes `instance` when no other process owns it.
    pub async fn try_own(&self, instance: &str) -> Result<bool, String> {
        let row = timed(
            "taking an instance's lock",
            self.client.query_one(
                &format!("SELECT pg_try_advisory_lock({INSTANCE_KEY})"),
                &[&self.fleet, &instance],
            ),
        )
        .await?;
        Ok(row.get(0))
    }

    /// Gives `instance` up.
    pub async fn release(&self, instance: &str) -> Result<(), String> {
        timed(
            "releasing an instance's lock",
            self.client.execute(
                &format!("SELECT pg_advisory_unlock({INSTANCE_KEY})"),
                &[&self.fleet, &instance],
            ),
        )
        .await
        .map(drop)
    }

    /// Where a new owner of `instance` starts filling, in microseconds: the watermark the last
    /// owner left, or (an instance never owned in this fleet, e.g. ingested before the fleet
    /// existed) its newest row in `ha_states`; `None` when PostgreSQL has nothing of it.
    pub async fn start_of(&self, instance: &str) -> Result<Option<i64>, String> {
        let row = timed(
            "reading an instance's watermark",
            self.client.query_one(
                "SELECT (extract(epoch FROM complete_until) * 1000000)::int8
                 FROM ha_fleet_instances WHERE fleet = $1 AND instance = $2
                 UNION ALL SELECT NULL LIMIT 1",
                &[&self.fleet, &instance],
            ),
        )
        .await?;
        if let Some(us) = row.get::<_, Option<i64>>(0) {
            return Ok(Some(us));
        }
        // The sink creates ha_states on its first connection, which may come later.
        let row = timed(
            "reading an instance's newest row",
            self.client.query_one(
                "SELECT to_regclass('ha_states') IS NOT NULL AND to_regclass('ha_entities') IS NOT NULL",
                &[],
            ),
        )
        .await?;
        if !row.get::<_, bool>(0) {
            return Ok(None);
        }
        // Per entity, the newest `time` is one step down the primary key (entity, time, ...).
        let row = timed(
            "reading an instance's newest row",
            self.client.query_one(
                "SELECT (extract(epoch FROM max(n.t)) * 1000000)::int8
                 FROM ha_entities e,
                      LATERAL (SELECT max(time) AS t FROM ha_states WHERE entity = e.id) n
                 WHERE e.instance = $1",
                &[&instance],
            ),
        )
        .await?;
        Ok(row.get(0))
    }

    /// Records, for each `(instance, µs)`, that every state of the instance up to then is in
    /// `ha_states` (only for instances this session owns).
    pub async fn publish(&self, watermarks: &[(String, i64)]) -> Result<(), String> {
        if watermarks.is_empty() {
            return Ok(());
        }
        let (names, times): (Vec<&str>, Vec<i64>) =
            watermarks.iter().map(|(n, t)| (n.as_str(), *t)).unzip();
        timed(
            "recording watermarks",
            self.client.execute(
                "INSERT INTO ha_fleet_instances (fleet, instance, complete_until, owner, updated)
                 SELECT $1, u.instance, 'epoch'::timestamptz + u.us * interval '1 microsecond', $4, now()
                 FROM unnest($2::text[], $3::int8[]) AS u(instance, us)
                 ON CONFLICT (fleet, instance) DO UPDATE
                 SET complete_until = excluded.complete_until, owner = excluded.owner,
                     updated = excluded.updated",
                &[&self.fleet, &names, &times, &self.owner],
            ),
        )
        .await
        .map(drop)
    }
}
