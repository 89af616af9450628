//! The descriptor set the shipped mesh config gives the edge for the repair centre
//! (`mesh-config/descriptors/repair.binpb`) is the one these protos compile to: a proto
//! change without it would leave the edge transcoding an old contract.

#[test]
fn the_shipped_descriptor_set_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mesh-config/descriptors/repair.binpb");
    if std::env::var_os("PAYMESH_WRITE_DESCRIPTORS").is_some() {
        std::fs::write(&path, paymesh_repair_proto::FILE_DESCRIPTOR_SET).expect("write the descriptor set");
    }
    let shipped = std::fs::read(&path).unwrap_or_default();
    assert!(
        shipped == paymesh_repair_proto::FILE_DESCRIPTOR_SET,
        "{} is not what repair/v1/*.proto compile to; write it with\n  PAYMESH_WRITE_DESCRIPTORS=1 cargo test -p paymesh-repair-proto --test descriptors",
        path.display()
    );
}
