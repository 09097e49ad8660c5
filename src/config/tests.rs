use super::*;

fn file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(f.path(), text).expect("write");
    f
}

#[test]
fn defaults_are_valid() {
    let c = RawConfig::default().validate().expect("valid");
    assert_eq!(c.roles, Roles::ALL);
    assert_eq!(c.replication, ReplicationFactor::default());
    assert_eq!(c.max_recv_msg_size, 16 << 20);
    assert!(c.compress_pushes);
    assert_eq!(c.wal_sync, WalSync::Always);
    assert_eq!(
        c.http_limits,
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
        }
    );
    assert_eq!(
        c.retention.overrides.get("any"),
        crate::overrides::Limits::config_defaults()
    );
}

#[test]
fn http_limits_of_zero_are_refused() {
    let zero = [
        RawConfig {
            http_header_read_timeout_ms: Some(0),
            ..Default::default()
        },
        RawConfig {
            http_body_timeout_ms: Some(0),
            ..Default::default()
        },
        RawConfig {
            http_idle_timeout_ms: Some(0),
            ..Default::default()
        },
        RawConfig {
            http_max_connections: Some(0),
            ..Default::default()
        },
    ];
    for raw in zero {
        let err = raw.validate().expect_err("zero");
        assert!(err.to_string().contains("must be greater than 0"), "{err}");
    }
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    let f = file("replication_factr: 3\n");
    let err = RawConfig::load(Some(f.path()), &RawConfig::default()).expect_err("unknown");
    assert!(err.to_string().contains("replication_factr"), "{err}");
}

#[test]
fn quorums_that_do_not_overlap_name_the_field() {
    let f = file("replication_factor: 3\nread_quorum: 1\n");
    let err = RawConfig::load(Some(f.path()), &RawConfig::default())
        .expect("parses")
        .validate()
        .expect_err("invalid");
    assert!(err.to_string().contains("replication_factor"), "{err}");
    assert!(err.to_string().contains("must exceed"), "{err}");
}

#[test]
fn flags_override_the_file() {
    let f = file("target: [ingester]\nnode_name: from-file\npush_timeout_ms: 100\n");
    let flags = RawConfig {
        node_name: Some("from-flag".into()),
        ..Default::default()
    };
    let c = RawConfig::load(Some(f.path()), &flags)
        .expect("parses")
        .validate()
        .expect("valid");
    assert_eq!(c.node_name, "from-flag");
    assert_eq!(c.roles, Roles::INGESTER);
    assert_eq!(c.push_timeout, Duration::from_millis(100));
}

#[test]
fn tenant_overrides_apply_to_their_tenant_only() {
    let c = RawConfig {
        tenant_overrides: Some(vec![
            "fast:trace_idle_period_ms=500".into(),
            "fast:max_block_bytes=2048".into(),
            "brief:block_retention_hours=2".into(),
            "brief:max_bytes_per_tag_values_query=100".into(),
        ]),
        ..Default::default()
    }
    .validate()
    .expect("valid");
    assert_eq!(c.cut.idle_for("fast"), Duration::from_millis(500));
    assert_eq!(c.cut.idle_for("other"), Duration::from_secs(10));
    assert_eq!(c.cut.max_bytes_for("fast"), 2048);
    assert_eq!(c.cut.max_duration_for("fast"), Duration::from_secs(120));
    assert_eq!(
        c.retention.retention_for("brief"),
        Duration::from_secs(7200)
    );
    assert_eq!(
        c.retention.retention_for("other"),
        Duration::from_secs(336 * 3600)
    );
    let tags = |t: &str| c.retention.overrides.get(t).max_bytes_per_tag_values_query;
    assert_eq!((tags("brief"), tags("other")), (100, 5_000_000));
}

#[test]
fn bad_values_name_the_field() {
    for (raw, field) in [
        (
            RawConfig {
                target: Some(vec!["router".into()]),
                ..Default::default()
            },
            "target",
        ),
        (
            RawConfig {
                wal_sync: Some("sometimes".into()),
                ..Default::default()
            },
            "wal_sync",
        ),
        (
            RawConfig {
                push_timeout_ms: Some(0),
                ..Default::default()
            },
            "push_timeout_ms",
        ),
        (
            RawConfig {
                search_concurrent_jobs: Some(0),
                ..Default::default()
            },
            "search_concurrent_jobs",
        ),
        (
            RawConfig {
                search_target_bytes_per_job: Some(0),
                ..Default::default()
            },
            "search_target_bytes_per_job",
        ),
        (
            RawConfig {
                gossip_join: Some(vec!["nohost".into()]),
                ..Default::default()
            },
            "gossip_join",
        ),
    ] {
        let err = raw.validate().expect_err("invalid");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn compaction_settings_default_and_replaced_blocks_outlive_two_block_list_polls() {
    let c = RawConfig::default().validate().expect("valid");
    assert!(c.roles.contains(Roles::COMPACTOR), "all runs a compactor");
    assert_eq!(
        c.compaction,
        crate::compactor::CompactionSettings {
            interval: Duration::from_secs(30),
            settle: Duration::from_secs(120),
            concurrency: 2,
            retention: Duration::from_secs(600),
        }
    );
    let only = RawConfig {
        target: Some(vec!["compactor".into()]),
        ..Default::default()
    }
    .validate()
    .expect("valid");
    assert_eq!(only.roles, Roles::COMPACTOR);
    let err = RawConfig {
        blocklist_poll_ms: Some(30_000),
        compacted_block_retention_ms: Some(60_000),
        ..Default::default()
    }
    .validate()
    .expect_err("too short");
    assert!(
        err.to_string().contains("compacted_block_retention_ms"),
        "{err}"
    );
    for zero in [
        RawConfig {
            compaction_window_secs: Some(0),
            ..Default::default()
        },
        RawConfig {
            max_compacted_block_bytes: Some(0),
            ..Default::default()
        },
    ] {
        assert!(zero.validate().is_err());
    }
}
