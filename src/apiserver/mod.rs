pub mod audit;
pub mod ledger;
pub mod metrics;
