//! Generates the tonic/prost code from `proto/dynakv.proto` with a vendored protoc,
//! so a fresh machine needs no protoc of its own.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto = "../../proto/dynakv.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().bytes(".").compile_protos(&[proto], &["../../proto"])?;
    Ok(())
}
