//! The catalog's events as Rust calls: what a backend controller emits after
//! each change, by name, to the event's default rooms. Each is one
//! [`Hub::emit`] of a catalog event, checked like any other.

use std::future::Future;

use serde_json::{Map, Value, json};

use super::{Hub, Receipt};
use crate::error::Rejection;
use crate::events::{Emit, Severity, Target};

/// The catalog's events, emitted through a [`Hub`].
pub trait CatalogEmits {
    /// `shipment:updated` to `shipment:{id}`.
    fn shipment_updated(
        &self,
        shipment_id: &str,
        data: Value,
    ) -> impl Future<Output = Result<Receipt, Rejection>> + Send;

    /// `order:status_changed` to `order:{id}` (and `branch:{branch}` when given).
    fn order_status_changed(
        &self,
        order_id: &str,
        branch_id: Option<&str>,
        data: Value,
    ) -> impl Future<Output = Result<Receipt, Rejection>> + Send;

    /// `upload_progress` (0–100) to one user.
    fn upload_progress(
        &self,
        user_id: &str,
        upload_id: &str,
        progress: f64,
        data: Value,
    ) -> impl Future<Output = Result<Receipt, Rejection>> + Send;

    /// A `notification` to one user.
    fn notify_user(
        &self,
        user_id: &str,
        title: &str,
        message: &str,
        severity: Severity,
    ) -> impl Future<Output = Result<Receipt, Rejection>> + Send;
}

impl CatalogEmits for Hub {
    /// `shipment:updated` to `shipment:{id}`.
    async fn shipment_updated(&self, shipment_id: &str, data: Value) -> Result<Receipt, Rejection> {
        Hub::emit(
            self,
            catalog_emit("shipment:updated", data, &[("shipmentId", shipment_id)])?,
        )
        .await
    }

    /// `order:status_changed` to `order:{id}` (and `branch:{branch}` when given).
    async fn order_status_changed(
        &self,
        order_id: &str,
        branch_id: Option<&str>,
        data: Value,
    ) -> Result<Receipt, Rejection> {
        let mut fields = vec![("orderId", order_id)];
        if let Some(b) = branch_id {
            fields.push(("branchId", b));
        }
        Hub::emit(self, catalog_emit("order:status_changed", data, &fields)?).await
    }

    /// `upload_progress` (0–100) to one user.
    async fn upload_progress(
        &self,
        user_id: &str,
        upload_id: &str,
        progress: f64,
        data: Value,
    ) -> Result<Receipt, Rejection> {
        let mut emit = catalog_emit("upload_progress", data, &[("uploadId", upload_id)])?;
        emit.data.insert("progress".into(), json!(progress));
        emit.target = Target::user(user_id);
        Hub::emit(self, emit).await
    }

    /// A `notification` to one user.
    async fn notify_user(
        &self,
        user_id: &str,
        title: &str,
        message: &str,
        severity: Severity,
    ) -> Result<Receipt, Rejection> {
        let emit = Emit {
            event: "notification".into(),
            data: json!({ "title": title, "message": message, "severity": severity.as_str() })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            target: Target::user(user_id),
            idempotency_key: None,
        };
        Hub::emit(self, emit).await
    }
}

fn catalog_emit(event: &str, data: Value, fields: &[(&str, &str)]) -> Result<Emit, Rejection> {
    let mut data = match data {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => return Err(Rejection::bad_request("event data must be a JSON object")),
    };
    for (k, v) in fields {
        data.insert((*k).into(), Value::String((*v).into()));
    }
    Ok(Emit {
        event: event.into(),
        data,
        target: Target::default(),
        idempotency_key: None,
    })
}
