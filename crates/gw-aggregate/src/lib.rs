//! Gatehouse request aggregation (backend-for-frontend), pure logic: one client request fanned
//! out to several backend calls whose JSON responses are shaped and merged into one answer.
//!
//! * [`plan`]: the validated configuration of an aggregate ([`plan::Plan::build`] from an
//!   [`plan::AggregateSpec`]): calls, templates, the dependency graph (from templates that read
//!   `resp<N>` / `resp.<name>`, and `after`), cycle detection, limits.
//! * [`template`]: path, query, header and JSON body templates; values placed in a path are
//!   percent-encoded as one segment and the result is checked like a client path.
//! * [`dotted`]: dotted paths into JSON (`a.b.0.c`) and path sets (`allow` / `deny`).
//! * [`merge`]: per-call shaping (`target`, `flatten`, `wrap`, `deny`, `allow`, `mapping`,
//!   `group`) and the merge rule.
//! * [`exec`]: the executor, generic over [`exec::Caller`] (the function that calls one
//!   backend), with bounded concurrency, sequential steps, per-call timeouts, an overall
//!   deadline, the partial-failure policy and cancellation on drop.
//!
//! No network IO here: the gateway supplies the [`exec::Caller`] (its upstream exchange). See
//! `docs/aggregation.md`.

pub mod dotted;
pub mod exec;
pub mod merge;
pub mod plan;
pub mod request;
pub mod template;

pub use exec::{AggregateError, Aggregated, CallReport, Caller, Outcome, execute};
pub use plan::{AggregateSpec, BodySpec, CallSpec, Plan, PlanError, ShapeSpec, Target};
pub use request::{CallRequest, CallResponse, ClientRequest};
