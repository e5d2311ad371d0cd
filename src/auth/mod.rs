pub mod acl;
pub mod password;
