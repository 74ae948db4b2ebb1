//! Arbitrary bytes as the agent's mutating requests, then the checks the
//! agent runs on every name before any command: never a panic, and
//! anything accepted is safe to pass to appcmd as one argv element.
#![no_main]
use farm_proto::names::{check_operation_id, check_pool_name};
use farm_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::RecycleRequest::decode(data) {
        let _ = check_operation_id(&req.operation_id);
        for p in &req.pools {
            if check_pool_name(p).is_ok() {
                assert!(!p.contains(['"', '\n', '\r', '&', '|', '/', '\\']), "accepted {p:?}");
                assert!(p.len() <= farm_proto::names::MAX_NAME_LEN);
            }
        }
    }
    if let Ok(req) = pb::ResetRequest::decode(data) {
        let _ = check_operation_id(&req.operation_id);
    }
    if let Ok(req) = pb::DrainRequest::decode(data) {
        if check_operation_id(&req.operation_id).is_ok() {
            assert!(req.operation_id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)));
        }
    }
});
