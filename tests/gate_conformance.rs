//! The gate's HTTP/1.1 parsing as a conformance table: each row is one rule of RFC 9112 (§2-§5
//! message syntax, §3.2 request target and Host, §6 message body, §7.1 chunked coding) or
//! RFC 9110 (§8.6 Content-Length, §9 methods, §11 authentication), the raw bytes that exercise
//! it, and the answer. The bytes go over a plain `TcpStream` to a real agent's gate, so hyper's
//! own parsing is part of what is tested, and the gate forwards to a real Node-RED.
//!
//! The answer is the status (or statuses, for pipelined requests) and what Node-RED's HTTP
//! server saw of the request: the fixture Node-RED runs with a preloaded module ([`OBSERVER`],
//! `node --require`) that appends every request head its HTTP server parses — the `request` and
//! `upgrade` events, before any route, body parser or flow — to a file. A row that says
//! "never" means no head carrying the row's marker ever got that far, not merely that no flow
//! ran. Every request carries its marker in an `X-Row` header (and smuggled requests in their
//! path), and the observer records the request line and that header.
//!
//! The README's "The gate" section points here: this table is the gate's parsing behaviour.
//! Two behaviours a table row cannot show have tests of their own below: the editor's websocket
//! at any spelling of `/comms`, opened by a real websocket client, and the bound on the chunked
//! bodies the gate holds at once.

use redtether_testkit as common;

use base64::Engine;
use common::agent::Agent;
use common::http::{echo_flow, login, statuses_of};
use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Preloaded into Node-RED: records every request head its HTTP server parses.
const OBSERVER: &str = r#"'use strict';
// Written by tests/gate_conformance.rs: one JSON line per request head Node-RED's HTTP server
// parses, before Express, body parsers or flows see it.
const fs = require('fs');
const http = require('http');
const file = process.env.REDTETHER_OBSERVED;
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, req, ...rest) {
    if ((event === 'request' || event === 'upgrade') && file) {
        const line = { event, line: `${req.method} ${req.url}`, row: req.headers['x-row'] || null };
        fs.appendFileSync(file, JSON.stringify(line) + '\n');
    }
    return emit.call(this, event, req, ...rest);
};
"#;

/// Node-RED's own limit on the bodies it parses (`apiMaxLength`, default "5mb"), which the gate
/// applies to the chunked bodies it reads whole before forwarding.
const NODE_RED_MAX_BODY: usize = 5 * 1024 * 1024;

/// An agent whose Node-RED is observed, with probe routes: `GET|POST /probe/*` answer `hit`,
/// `POST /echo/*` echoes its body.
struct Observed {
    agent: Agent,
    _scratch: tempfile::TempDir,
    log: PathBuf,
}

impl Observed {
    fn start() -> Observed {
        let scratch = tempfile::tempdir().unwrap();
        let script = scratch.path().join("observer.js");
        std::fs::write(&script, OBSERVER).unwrap();
        let log = scratch.path().join("observed.jsonl");
        let node_red = format!(
            "command = [\"node\", \"--require\", {script:?}, {red_js:?}]\nhealth_interval = \"500ms\"\nenv = {{ REDTETHER_OBSERVED = {log:?} }}",
            script = script.display().to_string(),
            red_js = common::node_red::red_js().display().to_string(),
            log = log.display().to_string(),
        );
        let agent = Agent::start_with_flows(&node_red, "", None, &probe_flows());
        Observed { agent, _scratch: scratch, log }
    }

    fn addr(&self) -> String {
        self.agent.status()["gate"]["listen"].as_str().unwrap().to_string()
    }

    /// The request lines Node-RED's HTTP server parsed for heads carrying `marker`.
    fn seen(&self, marker: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["row"].as_str() == Some(marker) || v["line"].as_str().unwrap_or("").contains(marker))
            .map(|v| v["line"].as_str().unwrap().to_string())
            .collect()
    }

    async fn wait_routes(&self) {
        let client = common::http::client();
        let url = format!("http://{}/probe/ready", self.addr());
        common::wait_for_async(Duration::from_secs(15), "the probe routes", || async {
            (client.get(&url).send().await.ok()?.status() == 200).then_some(())
        })
        .await;
    }
}

fn probe_flows() -> serde_json::Value {
    let mut flows = echo_flow();
    let extra = serde_json::json!([
        {"id": "p1", "type": "http in", "z": "tab1", "url": "/probe/*", "method": "get", "upload": false, "wires": [["hit"]]},
        {"id": "p2", "type": "http in", "z": "tab1", "url": "/probe/*", "method": "post", "upload": false, "wires": [["hit"]]},
        {"id": "hit", "type": "change", "z": "tab1", "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": "hit", "tot": "str"}], "wires": [["out1"]]},
        {"id": "e1", "type": "http in", "z": "tab1", "url": "/echo/*", "method": "post", "upload": false, "wires": [["out1"]]}
    ]);
    flows.as_array_mut().unwrap().extend(extra.as_array().unwrap().iter().cloned());
    flows
}

/// What Node-RED's HTTP server saw of a row's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// No head carrying the row's marker reached it.
    Never,
    /// Exactly this request line (after `{m}` is replaced), once.
    Saw(&'static str),
}

struct Row {
    rule: &'static str,
    /// The bytes sent; `{h}` is the gate's host:port, `{m}` the row's marker, `{owner}` the owner's
    /// Basic credentials, `{session}` an editor session token.
    request: String,
    /// The statuses of the answers, in order (pipelined requests get one each).
    statuses: &'static [u16],
    upstream: Upstream,
    /// A header the (first) answer must carry, and how its value starts.
    header: Option<(&'static str, &'static str)>,
    /// How the answer must end (the body Node-RED echoed).
    body: Option<&'static str>,
    /// Half-close after sending (the client has nothing more to say).
    half_close: bool,
}

fn row(rule: &'static str, request: impl Into<String>, statuses: &'static [u16], upstream: Upstream) -> Row {
    Row { rule, request: request.into(), statuses, upstream, header: None, body: None, half_close: false }
}

impl Row {
    fn header(mut self, name: &'static str, starts: &'static str) -> Row {
        self.header = Some((name, starts));
        self
    }
    fn body(mut self, body: &'static str) -> Row {
        self.body = Some(body);
        self
    }
    fn half_close(mut self) -> Row {
        self.half_close = true;
        self
    }
}

use Upstream::{Never, Saw};

/// A plain request to `/probe/{m}` with these extra header lines (each ending in CRLF).
fn get_with(extra: &str) -> String {
    format!("GET /probe/{{m}} HTTP/1.1\r\nHost: {{h}}\r\nX-Row: {{m}}\r\n{extra}Connection: close\r\n\r\n")
}

/// A POST to `/probe/{m}` with these framing header lines and this body.
fn post_with(framing: &str, body: &str) -> String {
    format!("POST /probe/{{m}} HTTP/1.1\r\nHost: {{h}}\r\nX-Row: {{m}}\r\n{framing}Connection: close\r\n\r\n{body}")
}

/// A chunked POST to `/echo/{m}` (text, echoed back) with this body.
fn chunked(body: &str) -> String {
    format!(
        "POST /echo/{{m}} HTTP/1.1\r\nHost: {{h}}\r\nX-Row: {{m}}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
    )
}

/// An admin-space read with this `Authorization` header line (or none).
fn admin_with(auth: &str) -> String {
    format!("GET /device-editor/settings HTTP/1.1\r\nHost: {{h}}\r\nX-Row: {{m}}\r\n{auth}Connection: close\r\n\r\n")
}

const WS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn table() -> Vec<Row> {
    let over_limit = {
        // Just over Node-RED's limit, in 64 KiB chunks.
        let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
        format!("{}0\r\n\r\n", chunk.repeat(NODE_RED_MAX_BODY / 0x10000 + 1))
    };
    vec![
        // RFC 9112 §3.2: Host.
        row("9112 §3.2: one Host, origin-form", get_with(""), &[200], Saw("GET /probe/{m}")),
        row(
            "9112 §3.2: HTTP/1.1 without Host",
            "GET /probe/{m} HTTP/1.1\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row("9112 §3.2: two Host lines, same value", get_with("Host: {h}\r\n"), &[400], Never),
        row("9112 §3.2: two Host lines, different values", get_with("Host: elsewhere.example\r\n"), &[400], Never),
        row(
            "9112 §3.2: Host as a list",
            "GET /probe/{m} HTTP/1.1\r\nHost: {h}, {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2: Host with userinfo (invalid field value)",
            "GET /probe/{m} HTTP/1.1\r\nHost: user@{h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2: Host with a path (invalid field value)",
            "GET /probe/{m} HTTP/1.1\r\nHost: {h}/x\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2: empty Host (valid: uri-host may be empty)",
            "GET /probe/{m} HTTP/1.1\r\nHost:\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[200],
            Saw("GET /probe/{m}"),
        ),
        row(
            "9112 §3.2: HTTP/1.0 may omit Host",
            "GET /probe/{m} HTTP/1.0\r\nX-Row: {m}\r\n\r\n",
            &[200],
            Saw("GET /probe/{m}"),
        ),
        row(
            "9112 §3.2: HTTP/1.0 with two Host lines",
            "GET /probe/{m} HTTP/1.0\r\nHost: {h}\r\nHost: {h}\r\nX-Row: {m}\r\n\r\n",
            &[400],
            Never,
        ),
        // RFC 9112 §3.2.1-§3.2.4: request-target forms.
        row(
            "9112 §3.2.2: absolute-form naming the gate: forwarded in origin-form",
            "GET http://{h}/probe/{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[200],
            Saw("GET /probe/{m}"),
        ),
        row(
            "9112 §3.2.2: absolute-form whose authority is not the Host",
            "GET http://elsewhere.example/probe/{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2.2: absolute-form on HTTP/1.1 without Host",
            "GET http://{h}/probe/{m} HTTP/1.1\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2.2: absolute-form with two Host lines",
            "GET http://{h}/probe/{m} HTTP/1.1\r\nHost: {h}\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2.1: a relative target is not origin-form",
            "GET probe/{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2.4: asterisk-form (server-wide OPTIONS) is not passed",
            "OPTIONS * HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2.3: authority-form is CONNECT's, a method the gate does not pass",
            "CONNECT {h} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[405],
            Never,
        ),
        row(
            "9112 §3.2.1: dot segments and repeated slashes: forwarded resolved",
            "GET //probe/./x/../{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[200],
            Saw("GET /probe/{m}"),
        ),
        row(
            "9112 §3.2.1 (RFC 3986 §2.3): unreserved escapes: forwarded decoded",
            "GET /%70robe/{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[200],
            Saw("GET /probe/{m}"),
        ),
        row(
            "9112 §3.2.1 (RFC 3986 §2.2): an encoded slash could mean two paths",
            "GET /probe%2f{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2.1: a fragment is never part of a target",
            "GET /probe/{m}#x HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3: a space inside the target",
            "GET /probe/{m} x HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §3.2.1: the editor's websocket at another spelling (case): forwarded at /comms",
            format!("GET /device-editor/COMMS HTTP/1.1\r\nHost: {{h}}\r\nX-Row: {{m}}\r\n{WS}\r\n"),
            &[101],
            Saw("GET /device-editor/comms"),
        ),
        row(
            "9112 §3.2.1: the editor's websocket with a trailing slash: forwarded at /comms",
            format!("GET /device-editor/comms/?x=1 HTTP/1.1\r\nHost: {{h}}\r\nX-Row: {{m}}\r\n{WS}\r\n"),
            &[101],
            Saw("GET /device-editor/comms?x=1"),
        ),
        row(
            "9112 §3.2.1: a websocket anywhere else in admin space",
            format!("GET /device-editor/flows HTTP/1.1\r\nHost: {{h}}\r\nX-Row: {{m}}\r\n{WS}\r\n"),
            &[400],
            Never,
        ),
        // RFC 9112 §2-§5: message and field syntax.
        row("9112 §5.2: obs-fold", get_with("X-Folded: a\r\n b\r\n"), &[400], Never),
        row("9112 §5.1: whitespace between field name and colon", get_with("X-Name : v\r\n"), &[400], Never),
        row(
            "9112 §2.2: whitespace before the first field line",
            "GET /probe/{m} HTTP/1.1\r\n Host: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[400],
            Never,
        ),
        row("9112 §2.2: a bare CR inside a field", get_with("X-A: a\rb\r\n"), &[400], Never),
        row(
            "9112 §2.2: a bare LF ends a line (recipients MAY accept it)",
            "GET /probe/{m} HTTP/1.1\nHost: {h}\nX-Row: {m}\nConnection: close\n\n",
            &[200],
            Saw("GET /probe/{m}"),
        ),
        row(
            "9112 §2.3: a version other than HTTP/1.x (refused by hyper)",
            "GET /probe/{m} HTTP/2.0\r\nHost: {h}\r\nX-Row: {m}\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §5 (gate): a head over 32 KiB",
            get_with(&format!("X-Big: {}\r\n", "a".repeat(40 * 1024))),
            &[431],
            Never,
        ),
        row(
            "9110 §9.1: an unknown method",
            "PROPFIND /probe/{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[405],
            Never,
        )
        .header("allow", "GET, HEAD, POST"),
        row(
            "9110 §9.1: methods are case-sensitive",
            "get /probe/{m} HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nConnection: close\r\n\r\n",
            &[405],
            Never,
        ),
        // RFC 9112 §6, RFC 9110 §8.6: message body and its length.
        row("9112 §6.3: a request without length has no body", post_with("", ""), &[200], Saw("POST /probe/{m}")),
        row(
            "9112 §6.3: Content-Length is counted exactly, then the next head is judged",
            format!(
                "{}GET /probe/{{m}}-next HTTP/1.1\r\nHost: {{h}}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                post_with("Content-Length: 5\r\n", "hello").replace("Connection: close\r\n", "")
            ),
            &[200, 400],
            Saw("POST /probe/{m}"),
        ),
        row(
            "9112 §6.3: Content-Length with Transfer-Encoding",
            post_with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            &[400],
            Never,
        ),
        row(
            "9112 §6.3: Transfer-Encoding with Content-Length",
            post_with("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"),
            &[400],
            Never,
        ),
        row(
            "9112 §6.3: a request smuggled in a body framed two ways",
            post_with(
                "Content-Length: 47\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nGET /probe/{m}-smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n",
            ),
            &[400],
            Never,
        ),
        row(
            "9110 §8.6: two Content-Length lines",
            post_with("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            &[400],
            Never,
        ),
        row("9110 §8.6: Content-Length as a list", post_with("Content-Length: 5, 5\r\n", "hello"), &[400], Never),
        row("9110 §8.6: Content-Length with a sign", post_with("Content-Length: +5\r\n", "hello"), &[400], Never),
        row("9110 §8.6: Content-Length with a non-digit", post_with("Content-Length: 5a\r\n", "hello"), &[400], Never),
        row("9110 §8.6: negative Content-Length", post_with("Content-Length: -1\r\n", "hello"), &[400], Never),
        row("9110 §8.6: empty Content-Length", post_with("Content-Length:\r\n", "hello"), &[400], Never),
        row(
            "9110 §8.6: Content-Length beyond 64 bits",
            post_with("Content-Length: 99999999999999999999999\r\n", "hello"),
            &[400],
            Never,
        ),
        row(
            "9112 §6.3: a final transfer coding other than chunked",
            post_with("Transfer-Encoding: gzip\r\n", "hello"),
            &[400],
            Never,
        ),
        row(
            "9112 §6.1: a transfer coding the gate does not implement",
            post_with("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            &[501],
            Never,
        ),
        row(
            "9112 §6.1: chunked applied twice",
            post_with("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            &[400],
            Never,
        ),
        row(
            "9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing",
            "POST /probe/{m} HTTP/1.0\r\nX-Row: {m}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
            Never,
        ),
        row(
            "9112 §6.3 (gate): a refused upgrade ends the connection (the next head is not followed)",
            format!(
                "GET /device-editor/comms HTTP/1.1\r\nHost: {{h}}\r\nOrigin: https://evil.example\r\nX-Row: {{m}}\r\n{WS}\r\n{}",
                post_with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")
            ),
            &[403],
            Never,
        ),
        // RFC 9112 §7.1: chunked transfer coding.
        row(
            "9112 §7.1: chunks with extensions and a trailer",
            chunked("5;name=value\r\nhello\r\n6 ; q=\"a b\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
            &[200],
            Saw("POST /echo/{m}"),
        )
        .body("hello world"),
        row(
            "9112 §7.1: upper-case hex and leading zeros",
            chunked("000B\r\nhello world\r\n0\r\n\r\n"),
            &[200],
            Saw("POST /echo/{m}"),
        )
        .body("hello world"),
        row(
            "9112 §7.1: a chunk size that overflows",
            chunked("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            &[400],
            Never,
        ),
        row("9112 §7.1: a chunk size that is not hex", chunked("5x\r\nhello\r\n0\r\n\r\n"), &[400], Never),
        row("9112 §7.1: a chunk size with 0x", chunked("0x5\r\nhello\r\n0\r\n\r\n"), &[400], Never),
        row("9112 §7.1: a missing chunk size", chunked("\r\nhello\r\n0\r\n\r\n"), &[400], Never),
        row("9112 §7.1: chunk data without its CRLF", chunked("5\r\nhelloX\r\n0\r\n\r\n"), &[400], Never),
        row("9112 §7.1: a chunk size line ended by a bare LF", chunked("5\nhello\r\n0\r\n\r\n"), &[400], Never),
        row("9112 §7.1.1: a chunk extension without a name", chunked("5;=x\r\nhello\r\n0\r\n\r\n"), &[400], Never),
        row(
            "9112 §7.1.2: a trailer field without a colon",
            chunked("5\r\nhello\r\n0\r\nNo colon\r\n\r\n"),
            &[400],
            Never,
        ),
        row("9112 §7.1.2: a folded trailer field", chunked("5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"), &[400], Never),
        row(
            "9112 §7.1.2: a trailer section ended by a bare LF",
            chunked("5\r\nhello\r\n0\r\n\nX: y\r\n\r\n"),
            &[400],
            Never,
        ),
        row("9112 §7.1: a chunked body cut short", chunked("a\r\nhello"), &[400], Never).half_close(),
        row("9112 §7.1 (gate): a chunked body over Node-RED's 5 MiB", chunked(&over_limit), &[413], Never),
        row(
            "9112 §7.1: a malformed chunked body at the gate's own login",
            "POST /device-editor/auth/token HTTP/1.1\r\nHost: {h}\r\nX-Row: {m}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nusername=owner\r\n0\r\n\r\n",
            &[400],
            Never,
        ),
        // RFC 9110 §11: authentication.
        row(
            "9110 §11.4: Basic credentials",
            admin_with("Authorization: Basic {owner}\r\n"),
            &[200],
            Saw("GET /device-editor/settings"),
        ),
        row(
            "9110 §11.1: the scheme is case-insensitive (basic)",
            admin_with("Authorization: basic {owner}\r\n"),
            &[200],
            Saw("GET /device-editor/settings"),
        ),
        row(
            "9110 §11.1: the scheme is case-insensitive (BASIC)",
            admin_with("Authorization: BASIC {owner}\r\n"),
            &[200],
            Saw("GET /device-editor/settings"),
        ),
        row(
            "9110 §11.1: the scheme is case-insensitive (BEARER)",
            admin_with("Authorization: BEARER {session}\r\n"),
            &[200],
            Saw("GET /device-editor/settings"),
        ),
        row(
            "9110 §11.1: the scheme is case-insensitive (bearer)",
            admin_with("Authorization: bearer {session}\r\n"),
            &[200],
            Saw("GET /device-editor/settings"),
        ),
        row(
            "9110 §11.4: one or more SP after the scheme",
            admin_with("Authorization: Basic   {owner}\r\n"),
            &[200],
            Saw("GET /device-editor/settings"),
        ),
        row("9110 §11.4: HTAB is not SP", admin_with("Authorization: Basic\t{owner}\r\n"), &[401], Never),
        row("9110 §11.4: a scheme without credentials", admin_with("Authorization: Basic\r\n"), &[401], Never),
        row(
            "9110 §11.6.2: two Authorization lines",
            admin_with("Authorization: Basic {owner}\r\nAuthorization: Basic {owner}\r\n"),
            &[401],
            Never,
        ),
        row("9110 §11.4: an unknown scheme", admin_with("Authorization: Negotiate abc\r\n"), &[401], Never),
        row(
            "9110 §11.6.1: a 401 carries a challenge (Bearer in admin space: no browser dialog)",
            admin_with(""),
            &[401],
            Never,
        )
        .header("www-authenticate", "Bearer realm="),
    ]
}

/// Sends `bytes` on a fresh connection and returns what the gate answered until it closed the
/// connection or went quiet for 1.5 s.
fn exchange(addr: &str, bytes: &[u8], half_close: bool) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    // A refused request may be answered (and the connection closed) before it is all sent.
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header_of<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_parses_requests_as_the_rfcs_say() {
    let observed = Observed::start();
    observed.wait_routes().await;
    let addr = observed.addr();
    let client = common::http::client();
    let session = login(&client, &format!("http://{addr}"), "owner", "owner-pw").await.unwrap();
    let owner = base64::engine::general_purpose::STANDARD.encode("owner:owner-pw");

    let fill = |s: &str, marker: &str| {
        s.replace("{h}", &addr).replace("{m}", marker).replace("{owner}", &owner).replace("{session}", &session)
    };
    let rows = table();
    let mut results = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let marker = format!("k{i:03}");
        let started = Instant::now();
        let answer = exchange(&addr, fill(&row.request, &marker).as_bytes(), row.half_close);
        results.push((marker, answer, started.elapsed()));
    }
    // Anything forwarded has been parsed by Node-RED by the time its answer came back; give a
    // refused request that was (wrongly) forwarded a moment to show up too.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut failures = Vec::new();
    let mut table = String::new();
    for (row, (marker, answer, elapsed)) in rows.iter().zip(&results) {
        let statuses = statuses_of(answer);
        let seen = observed.seen(marker);
        let mut wrong = Vec::new();
        if statuses != row.statuses {
            wrong.push(format!("answered {statuses:?}, expected {:?}", row.statuses));
        }
        match row.upstream {
            Never if !seen.is_empty() => wrong.push(format!("Node-RED saw {seen:?}")),
            Saw(line) if seen != [fill(line, marker)] => {
                wrong.push(format!("Node-RED saw {seen:?}, expected [{:?}]", fill(line, marker)))
            }
            _ => {}
        }
        if let Some((name, starts)) = row.header
            && !header_of(answer, name).is_some_and(|v| v.starts_with(starts))
        {
            wrong.push(format!("{name}: {:?}, expected {starts:?}…", header_of(answer, name)));
        }
        if let Some(body) = row.body
            && !answer.ends_with(body)
        {
            wrong.push(format!("body does not end with {body:?}"));
        }
        let upstream = match row.upstream {
            Never => "never".to_string(),
            Saw(line) => format!("saw {line}"),
        };
        table.push_str(&format!("{:<90} {:?} {upstream} ({} ms)\n", row.rule, row.statuses, elapsed.as_millis()));
        if !wrong.is_empty() {
            let shown = answer.lines().next().unwrap_or("");
            failures.push(format!("{} [{marker}]: {} (first line: {shown:?})", row.rule, wrong.join("; ")));
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

/// The editor's websocket at a non-canonical spelling of `/comms` opens at once and is the real
/// editor connection (its auth handshake works), opened at Node-RED's own spelling.
#[tokio::test(flavor = "multi_thread")]
async fn the_editor_websocket_opens_at_any_spelling_of_comms_without_waiting() {
    let observed = Observed::start();
    let addr = observed.addr();
    let client = common::http::client();
    let session = login(&client, &format!("http://{addr}"), "member", "member-pw").await.unwrap();
    for (i, path) in ["/device-editor/COMMS", "/device-editor/comms/", "/Device-Editor//comms"].iter().enumerate() {
        let marker = format!("ws{i}");
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}{path}"
        ))
        .unwrap();
        request.headers_mut().insert("x-row", marker.parse().unwrap());
        let started = Instant::now();
        let (mut ws, response) =
            tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(request))
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer within 3 s"))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(response.status(), 101, "{path}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}: took {:?}", started.elapsed());
        ws.send(Message::text(serde_json::json!({ "auth": session }).to_string())).await.unwrap();
        let auth = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(auth.to_text().unwrap(), r#"{"auth":"ok"}"#, "{path}: the editor's own handshake");
        assert_eq!(observed.seen(&marker), ["GET /device-editor/comms"], "{path}: Node-RED's spelling");
        ws.close(None).await.unwrap();
    }
}

/// The gate holds chunked bodies whole before forwarding them, so what it holds at once is
/// bounded over all requests: seven bodies just under the per-body limit, none of them finished,
/// are more than the gate's total, and one is turned away (503) instead of buffered. The others
/// are forwarded once they end, and Node-RED never sees the refused one.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_bodies_held_at_once_are_bounded_in_total() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let observed = Observed::start();
    observed.wait_routes().await;
    let addr = observed.addr();
    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
    let body = chunk.repeat(NODE_RED_MAX_BODY / 0x10000 - 1);
    let mut uploads = Vec::new();
    for i in 0..7 {
        let marker = format!("held{i}");
        let head = format!(
            "POST /probe/{marker} HTTP/1.1\r\nHost: {addr}\r\nX-Row: {marker}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let (mut read, mut write) = tokio::net::TcpStream::connect(&addr).await.unwrap().into_split();
        let answer = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = read.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        });
        // Everything but the last chunk: no body can end, so the gate must hold them all.
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(body.as_bytes()).await;
        uploads.push((marker, write, answer));
    }
    let (first, index, _) = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::select_all(uploads.iter_mut().map(|(_, _, answer)| answer)),
    )
    .await
    .expect("one upload is answered before any body has ended");
    let first = first.unwrap();
    assert_eq!(statuses_of(&first), [503], "{first}");
    assert!(first.contains("gate_busy"), "{first}");

    let mut refused = 0;
    for (i, (marker, mut write, answer)) in uploads.into_iter().enumerate() {
        let answer = if i == index {
            first.clone()
        } else {
            let _ = write.write_all(b"0\r\n\r\n").await;
            answer.await.unwrap()
        };
        match statuses_of(&answer).as_slice() {
            [200] => assert_eq!(observed.seen(&marker), [format!("POST /probe/{marker}")], "{marker}"),
            [503] => {
                refused += 1;
                assert!(observed.seen(&marker).is_empty(), "{marker}: Node-RED saw the refused upload");
            }
            other => panic!("{marker}: answered {other:?}"),
        }
    }
    assert!(refused >= 1);
}
