//! Scoped access: an account limited to products, groups (sites) or channels
//! ([`Scope`], set by an admin with `PUT /api/v1/users/{name}/scope`) sees and acts on that
//! part of the fleet only, with every role it holds, through sessions and its tokens alike.
//!
//! - Devices: lists hold only devices in scope; one out of scope is answered 404 (show,
//!   reports, revoke), as if it did not exist; enrolling one is refused (403).
//! - Deployments: a deployment is in scope when every device its target can reach is
//!   ([`Scope::admits_target`]); lists hold only those (cut by the database, through
//!   [`crate::store::DeploymentFilter::scope`]), others are 404 (show, actions,
//!   approvals), and creating one beyond the scope is refused (403). Its counts and members
//!   are then the scope's devices.
//! - Releases: lists and reads hold only the scope's products.
//! - Answers that cover the whole fleet and cannot be cut to a scope are refused (403): the
//!   audit trail (export, head, checkpoint), tokens, accounts, the root chain. `/metrics` is
//!   public and fleet-wide by design: it is for whoever runs the server, not per site.

use super::Caller;
use crate::error::ApiError;
use crate::store::accounts::Scope;
use crate::store::{Deployment, Device, Page, Product, Store, StoreResult, Target};

impl Caller {
    /// The caller's scope, if it restricts anything.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref().filter(|s| !s.is_unrestricted())
    }

    /// Refuses a scoped caller an answer about the whole fleet.
    pub fn refuse_scoped(&self, what: &str) -> Result<(), ApiError> {
        match self.scope() {
            Some(_) => Err(ApiError::Forbidden(format!(
                "{what} covers the whole fleet; this account is limited to a scope"
            ))),
            None => Ok(()),
        }
    }
}

/// The window `page` of an already filtered list.
pub fn window<T>(items: Vec<T>, page: Page) -> Vec<T> {
    let skip = usize::try_from(page.offset).unwrap_or(usize::MAX);
    items
        .into_iter()
        .skip(skip)
        .take(page.limit as usize)
        .collect()
}

/// A device as a scoped caller may see it: out of scope reads as not found.
pub fn device_in_scope(caller: &Caller, device: Device) -> Result<Device, ApiError> {
    match caller.scope() {
        Some(scope) if !scope.admits_device(&device) => Err(ApiError::NotFound(format!(
            "device {:.70} not found",
            device.id
        ))),
        _ => Ok(device),
    }
}

/// Whether every device a deployment of `product` to `target` can reach is in `scope`
/// (blocking: looks up the devices of a device-list target).
pub fn target_in_scope(
    s: &dyn Store,
    scope: &Scope,
    product: &Product,
    target: &Target,
) -> StoreResult<bool> {
    let devices = match target {
        Target::Devices(ids) => {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(d) = s.device(id)? {
                    found.push(d);
                }
            }
            found
        }
        _ => Vec::new(),
    };
    Ok(scope.admits_target(product, target, &devices))
}

/// Whether a deployment is in `scope` (blocking).
pub fn deployment_in_scope(s: &dyn Store, scope: &Scope, d: &Deployment) -> StoreResult<bool> {
    target_in_scope(s, scope, &d.product, &d.target)
}

/// A deployment as a scoped caller may see it: out of scope reads as not found.
pub async fn check_deployment(
    state: &super::AppState,
    caller: &Caller,
    d: &Deployment,
) -> Result<(), ApiError> {
    let Some(scope) = caller.scope().cloned() else {
        return Ok(());
    };
    let dep = d.clone();
    if state
        .db
        .run(move |s| deployment_in_scope(s, &scope, &dep))
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("deployment {} not found", d.id)))
    }
}
