//! `/devices/{id}/logs`: Node-RED's recent output on a device, then new lines as they come.
//! The page is rendered with the last lines the device holds (read as the API's fetch reads
//! them, for the caller); the console's script then follows
//! `/api/devices/{id}/logs?follow=true&after=<the last seq shown>` (server-sent events, the
//! session cookie, same-origin) and appends each line as text, never as markup. Members and
//! owners only, like the API.

use super::layout::{self, Nav};
use super::seg;
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use http::{Response, StatusCode};
use maud::html;

/// Lines the page opens with.
const SHOWN: u32 = 500;

impl Api {
    pub(super) async fn logs_page(&self, caller: &Caller, id: &str) -> Response<ApiBody> {
        let narrowed = self.narrowed(caller, &["api", "devices", id]);
        let (status, answer) = self.logs_now(&narrowed, id, SHOWN).await;
        let refusal = match status {
            StatusCode::OK => None,
            StatusCode::NOT_FOUND => Some("No device has this id."),
            StatusCode::FORBIDDEN => {
                Some("Reading a device's logs needs the member role: they hold whatever its flows printed.")
            }
            StatusCode::CONFLICT => Some("The device is offline: its logs are read from the device itself."),
            _ => Some("The device did not send its logs; try again."),
        };
        if let Some(text) = refusal {
            let status = if status == StatusCode::OK { StatusCode::BAD_GATEWAY } else { status };
            return layout::message(Some(caller), status, "Node-RED logs", text);
        }
        let lines = answer["lines"].as_array().cloned().unwrap_or_default();
        let last = lines.last().and_then(|l| l["seq"].as_u64());
        let follow = match last {
            Some(seq) => format!("/api/devices/{}/logs?follow=true&after={seq}", seg(id)),
            None => format!("/api/devices/{}/logs?follow=true", seg(id)),
        };
        let content = html! {
            p { a href={ "/devices/" (seg(id)) } { "Back to the device" } }
            p.muted #logs-state data-state="static" {
                "Lines as Node-RED wrote them (a flow that prints a secret shows it here). "
                "Newest at the bottom; new lines follow while this page is open."
            }
            ol.log #log-lines data-logs-follow=(follow) {
                @for line in &lines {
                    li data-seq=(line["seq"].as_u64().unwrap_or(0)) class={ "stream-" (line["stream"].as_str().unwrap_or("stdout")) } {
                        span.time { (line["time"].as_str().unwrap_or_default()) }
                        " "
                        span.text { (line["text"].as_str().unwrap_or_default()) }
                    }
                }
            }
        };
        let title = format!("Node-RED logs of {id}");
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Devices, &title, None, content))
    }
}
