//! Expose: what people and other systems read — `/metrics`, `/healthz`,
//! `/readyz`, and (as the analysis grows) the JSON API and incident pages.

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod ui;
