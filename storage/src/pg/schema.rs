//! The database schema, versioned: each migration runs once, in order, at start, inside
//! one transaction holding an advisory lock (so instances starting together do not race).

use tokio_postgres::Client;

use crate::StoreError;

/// Any fixed number: the advisory lock instances take while migrating.
const MIGRATION_LOCK: i64 = 0x6361_5f73_6368;

/// `(version, SQL)`, applied in order; never edit one that has shipped, add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r"
    -- The log: one row per record, seq assigned by the writer (no SEQUENCE: those leave gaps
    -- and commit out of order). hash = SHA-256(prev_hash || seq_be || event).
    CREATE TABLE ca_log (
        seq                bigint PRIMARY KEY CHECK (seq >= 0),
        prev_hash          bytea  NOT NULL CHECK (length(prev_hash) = 32),
        hash               bytea  NOT NULL UNIQUE CHECK (length(hash) = 32),
        recorded_at_micros bigint NOT NULL,
        epoch              bigint NOT NULL,
        event              bytea  NOT NULL
    );
    -- The writer lease and the head it guards: every append updates this row only if its
    -- epoch and head are the writer's, so a writer that lost the lease appends nothing.
    CREATE TABLE ca_lease (
        id         smallint PRIMARY KEY CHECK (id = 1),
        epoch      bigint      NOT NULL,
        holder     text        NOT NULL,
        expires_at timestamptz NOT NULL,
        next_seq   bigint      NOT NULL,
        head       bytea       NOT NULL CHECK (length(head) = 32)
    );
    INSERT INTO ca_lease VALUES (1, 0, '', '-infinity', 0, decode(repeat('00', 32), 'hex'));
    -- Projections, written in the same transaction as the records they fold.
    CREATE TABLE ca_certs (
        serial    bytea   PRIMARY KEY,
        seq       bigint  NOT NULL,
        not_after bigint  NOT NULL,
        issuer    integer NOT NULL
    );
    CREATE INDEX ca_certs_not_after ON ca_certs (not_after);
    CREATE TABLE ca_revoked (
        serial          bytea    PRIMARY KEY,
        seq             bigint   NOT NULL,
        reason          smallint NOT NULL,
        revoked_at      bigint   NOT NULL,
        invalidity_date bigint
    );
    CREATE TABLE ca_issuers (
        generation      integer PRIMARY KEY,
        rotated_seq     bigint,
        last_crl_number bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE ca_acme (
        key bytea  NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (key, seq)
    );
    ",
    ),
    (
        2,
        r"
    -- Where the writer takes requests other instances pass on (its gRPC URL); '' = unknown.
    ALTER TABLE ca_lease ADD COLUMN grpc_url text NOT NULL DEFAULT '';
    ",
    ),
    (
        3,
        r"
    -- The newest CRL of each issuer and kind as the writer published it, for the instances
    -- that serve CRLs without signing them; seq is its CrlPublished record, which names
    -- the bytes' SHA-256 (crls.rs).
    CREATE TABLE ca_crl (
        issuer integer NOT NULL,
        delta  boolean NOT NULL,
        seq    bigint  NOT NULL,
        der    bytea   NOT NULL,
        PRIMARY KEY (issuer, delta)
    );
    ",
    ),
];

pub(crate) const LATEST: i32 = 3;

/// Bring the schema to [`LATEST`]; refuse a database a newer build migrated.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ca_schema (
            version    integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let have: Option<i32> = tx.query_one("SELECT max(version) FROM ca_schema", &[]).await?.get(0);
    let have = have.unwrap_or(0);
    if have > LATEST {
        return Err(StoreError::Format {
            found: u32::try_from(have).unwrap_or(u32::MAX),
            supported: LATEST as u32,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > have) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO ca_schema (version) VALUES ($1)", &[version]).await?;
        tracing::info!(version, "database schema migrated");
    }
    tx.commit().await?;
    Ok(())
}
