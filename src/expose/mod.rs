//! Expose: what people and other systems read — `/metrics`, `/healthz`,
//! `/readyz`, and (as the analysis grows) the JSON API and incident pages.

pub mod admin;
pub mod api;
pub mod ui;
