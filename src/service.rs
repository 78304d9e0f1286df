//! The identity every stage keys on: a service in one deployment
//! environment. It sits among the leaves so the receivers, the analysis,
//! the self-metrics and the event model name a service the same way
//! without importing each other.

use std::sync::Arc;

/// An interned string shared by every fact that names it.
pub type Sym = Arc<str>;

/// What the analysis keeps apart: a service in one deployment environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub service: Sym,
    pub environment: Option<Sym>,
}

impl ServiceKey {
    pub(crate) fn new(service: &str, environment: Option<&str>) -> ServiceKey {
        ServiceKey {
            service: Sym::from(service),
            environment: environment.map(Sym::from),
        }
    }
}

impl std::fmt::Display for ServiceKey {
    /// `checkout`, or `checkout (production)`: for logs and messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.environment {
            Some(environment) => write!(f, "{} ({environment})", self.service),
            None => f.write_str(&self.service),
        }
    }
}
