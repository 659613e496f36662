//! The wire front end against real clients: tokio-postgres, and a raw
//! client for what drivers never send.

mod auth;
mod driver;
mod fake;
mod limits;
mod protocol;
mod raw;
mod transactions;
