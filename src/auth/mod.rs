pub mod acl;
pub mod cert_name;
pub mod password;
