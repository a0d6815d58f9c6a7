//! What the live tests start: labs of local servers (`lab`, `cluster`), a real sshd (`sshd`) and
//! network-namespace hosts (`netns`), and application endpoints on them (`proxy`).
#![allow(dead_code)]

pub mod cluster;
pub mod etcd;
pub mod galera;
pub mod lab;
pub mod netns;
pub mod proxy;
pub mod sshd;
