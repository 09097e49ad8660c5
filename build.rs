//! Generates the internal RPC messages (prost, via protox: no `protoc` needed) and
//! the two gRPC services whose hot methods take raw bytes (tonic's manual builder).

use tonic_build::manual::{Builder, Method, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ringtail.proto");
    build_info();
    let fds = protox::compile(["proto/ringtail.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .bytes(".")
        .compile_fds(fds)?;

    // The ingester service. `Push` takes the request as raw bytes so the ingester
    // can append exactly what it received to its WAL and decode it without copying
    // (and a distributor sends a body shared among ingesters and each one's own end).
    let ingester = Service::builder()
        .name("Ingester")
        .package("ringtail.v1")
        .method(
            Method::builder()
                .name("push")
                .route_name("Push")
                .input_type("crate::rpc::codec::PushBody")
                .output_type("crate::rpc::proto::PushResponse")
                .codec_path("crate::rpc::codec::WireCodec")
                .build(),
        )
        .method(
            Method::builder()
                .name("push_compressed")
                .route_name("PushCompressed")
                .input_type("crate::rpc::codec::PushBody")
                .output_type("crate::rpc::proto::PushResponse")
                .codec_path("crate::rpc::codec::WireCodec")
                .build(),
        )
        .method(
            Method::builder()
                .name("find_trace_by_id")
                .route_name("FindTraceById")
                .input_type("crate::rpc::proto::FindTraceRequest")
                .output_type("crate::rpc::proto::FindTraceResponse")
                .codec_path("crate::rpc::codec::WireCodec")
                .build(),
        )
        .method(
            Method::builder()
                .name("search")
                .route_name("Search")
                .input_type("crate::rpc::proto::SearchRequest")
                .output_type("crate::rpc::proto::SearchResponse")
                .codec_path("crate::rpc::codec::WireCodec")
                .build(),
        )
        .method(
            Method::builder()
                .name("search_tags")
                .route_name("SearchTags")
                .input_type("crate::rpc::proto::SearchTagsRequest")
                .output_type("crate::rpc::proto::SearchTagsResponse")
                .codec_path("crate::rpc::codec::WireCodec")
                .build(),
        )
        .build();

    // OTLP's TraceService, served by distributors. The request stays raw bytes:
    // the distributor splits it by trace ID with a shallow decode.
    let otlp = Service::builder()
        .name("TraceService")
        .package("opentelemetry.proto.collector.trace.v1")
        .method(
            Method::builder()
                .name("export")
                .route_name("Export")
                .input_type("crate::rpc::codec::RawBytes")
                .output_type(
                    "opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse",
                )
                .codec_path("crate::rpc::codec::WireCodec")
                .build(),
        )
        .build();

    Builder::new().compile(&[ingester, otlp]);
    Ok(())
}

/// The revision, build date and compiler for `/api/status/buildinfo` (Tempo's shape). The
/// revision is git's when the source is a checkout; the date is when this script last ran
/// (it reruns when the checked-out commit changes).
fn build_info() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
    if let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=RINGTAIL_GIT_REVISION={rev}");
    }
    if let Some(branch) = git(&["rev-parse", "--abbrev-ref", "HEAD"]) {
        println!("cargo:rustc-env=RINGTAIL_GIT_BRANCH={branch}");
    }
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    println!("cargo:rustc-env=RINGTAIL_BUILD_DATE={now}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Some(version) = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
    {
        println!("cargo:rustc-env=RINGTAIL_RUSTC_VERSION={}", version.trim());
    }
}
