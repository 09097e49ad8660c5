//! Logging (tracing), the Prometheus recorder for the `metrics` crate, and the status
//! records of the named background workers (`GET /status/workers`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide tracing subscriber (`RUST_LOG` or `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: container logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (tests): render an empty registry.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// What a named background worker has done, as `GET /status/workers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerReport {
    pub name: &'static str,
    /// Rounds finished since the process started.
    pub rounds: u64,
    /// When the last round finished (Unix seconds); `None` before the first.
    pub last_run_unix: Option<u64>,
    /// Why the last round failed; `None` when it succeeded (or none ran yet).
    pub last_error: Option<String>,
}

/// The status record one worker updates at the end of each round: one short lock per
/// round (rounds run every second at most, never per span).
#[derive(Debug)]
pub struct WorkerStatus(Mutex<WorkerReport>);

impl WorkerStatus {
    pub fn round_ok(&self) {
        self.finish_round(None);
    }

    pub fn round_failed(&self, error: &dyn std::fmt::Display) {
        self.finish_round(Some(error.to_string()));
    }

    fn finish_round(&self, error: Option<String>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut report = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        report.rounds += 1;
        report.last_run_unix = Some(now);
        report.last_error = error;
    }

    fn report(&self) -> WorkerReport {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The named workers of one node, in the order they started. Cloning shares the list.
#[derive(Clone, Debug, Default)]
pub struct Workers(Arc<Mutex<Vec<Arc<WorkerStatus>>>>);

impl Workers {
    /// Adds a worker called `name`; it records its rounds in the returned status.
    pub fn register(&self, name: &'static str) -> Arc<WorkerStatus> {
        let status = Arc::new(WorkerStatus(Mutex::new(WorkerReport {
            name,
            rounds: 0,
            last_run_unix: None,
            last_error: None,
        })));
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(status.clone());
        status
    }

    pub fn reports(&self) -> Vec<WorkerReport> {
        let workers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        workers.iter().map(|w| w.report()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_report_counts_rounds_and_keeps_only_the_last_outcome() {
        let workers = Workers::default();
        let cut = workers.register("ingester-cut");
        workers.register("ingester-flush");
        cut.round_failed(&"disk full");
        assert_eq!(
            workers.reports()[0].last_error.as_deref(),
            Some("disk full")
        );
        cut.round_ok();
        let reports = workers.reports();
        assert_eq!(reports[0].rounds, 2);
        assert_eq!(reports[0].last_error, None);
        assert!(reports[0].last_run_unix.is_some());
        assert_eq!(
            (reports[1].name, reports[1].rounds, reports[1].last_run_unix),
            ("ingester-flush", 0, None)
        );
    }
}
