//! Where blocks live: the object store's settings (read from the config by
//! `config`, used by [`super::BlockStore::open`]).

use std::path::PathBuf;

/// Where blocks live.
#[derive(Clone)]
pub enum StorageConfig {
    Filesystem { path: PathBuf },
    S3(S3Config),
}

/// S3 settings; unset credentials come from the standard AWS environment variables.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub path_style: bool,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageConfig::Filesystem { path } => write!(f, "filesystem({})", path.display()),
            // Never print credentials.
            StorageConfig::S3(s3) => {
                write!(f, "s3(bucket={}, endpoint={:?})", s3.bucket, s3.endpoint)
            }
        }
    }
}
