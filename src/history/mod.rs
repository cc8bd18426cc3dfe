//! Document history: what the store keeps (`[history]`, the retention), versions, time travel,
//! restore and who wrote what. The store keeps the rows (`crate::store::History`); the API
//! reads them (`crate::api`); the document actor applies restores and makes automatic versions.

pub mod settings;

pub use settings::HistorySettings;
