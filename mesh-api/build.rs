//! Generates the gRPC code for `proto/` with protox (a Rust protobuf compiler), so no
//! `protoc` binary is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["istio/v1/auth/ca.proto", "trellis/config/v1/config.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
