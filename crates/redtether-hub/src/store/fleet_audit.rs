//! The fleet audit: every event devices delivered and every event the hub recorded (about a
//! device, or about its operators and logins), newest first, filtered and paged for the operator
//! console's audit page and a device's audit tab, and streamed whole for export. Rows carry a
//! `source`, `device` or `hub`, as `GET /api/devices/{id}/audit` does (`audit_view`).
//!
//! Pages must answer in milliseconds over a million events, so they are read from an index kept
//! beside the events, never from the events themselves:
//!
//! - `audit_by_time`: `at` (Unix milliseconds, big-endian) · source (`d` or `h`) · device · 0 ·
//!   seq (big-endian) · id → a head (kind and actor, length-prefixed, so a filter is checked
//!   without parsing JSON), followed for a hub event by the rest of its row as JSON. A page is
//!   one reverse range scan; `since` and `until` are its bounds. The rows it returns are read
//!   by key: a device event from `device_audit` (its key is in the index key), a hub event from
//!   the entry itself (most have no other home: operators' events are only in the journal file).
//! - `audit_by_device`: device · 0 · `at` · source · seq · id → the head only. A `device`
//!   filter scans that device's part, so a quiet device's tab does not wade through the rest of
//!   the fleet.
//! - `audit_index_meta`: `version` (the layout the index was built with), `building` (how far
//!   a build got) and `journal_seq` (the newest hub journal event indexed).
//!
//! Why device rows are not copied into the index (measured with `examples/seed_fleet.rs` and
//! `examples/fleet_audit_timing.rs`): sled scans at about a microsecond an entry whether values
//! hold 40 or 300 bytes, and a page's 50 point reads cost a fraction of a millisecond, but the
//! copies made seeding a million events a third slower and the database a fifth larger.
//!
//! Device ids cannot hold a 0 byte (`redtether_proto::names::valid_name`), which is what keeps
//! the keys unambiguous. Events without a device (operators' accounts, logins, an enrollment
//! with an unknown token) are in `audit_by_time` only.
//!
//! `at` is the event's own timestamp, but never later than when the hub indexed it: a device
//! whose clock runs ahead cannot pin its events to the top of the page. An event whose
//! timestamp does not parse is placed when it was indexed. Events placed in the same
//! millisecond are ordered by source, device and seq: one device's stay in its order, and
//! between devices a millisecond decides nothing anyway.
//!
//! The index is written in the same sled transaction as the event (`ingest_audit`,
//! `record_event`, `record`). It is derived data and rebuilt when missing: a database written
//! by a hub without it is indexed once when opened (`version`), and hub journal events the
//! index does not have (the journal is written before sled, and sled only flushes every half
//! second; a crash in between) are indexed at the next open from `journal_seq` on, restoring a
//! lost `events` row on the way.
//!
//! A filter on kind, actor or source cannot seek, so a page stops after examining
//! [`MAX_EXAMINED`] entries even with fewer than `limit` rows, saying `partial` and giving a
//! cursor to continue from: a filter that matches nothing costs one bounded scan per request,
//! not a walk over a million rows. The export has no such bound.

use super::{HubEvent, SledStore, StoreError, decode, device_key, encode, hub_event_actor};
use base64::Engine;
use redtether_proto::audit::{HubEventKind, Level, StoredEvent};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime};

/// Index entries one page request examines at most: over a million events, 8–12 ms of
/// scanning, some 25 ms with a cold cache (`examples/fleet_audit_timing.rs`).
pub const MAX_EXAMINED: usize = 20_000;
/// Rows in a page when the query does not say.
pub const DEFAULT_LIMIT: usize = 50;
/// The most rows a page may ask for.
pub const MAX_LIMIT: usize = 500;
/// The first line of a CSV export: the columns [`csv_line`] writes.
pub const CSV_HEADER: &str = "ts,source,device,seq,id,kind,actor,target,level,detail\r\n";

/// The index layout; a database indexed with another is indexed again when opened.
const INDEX_VERSION: u64 = 1;
const VERSION_KEY: &[u8] = b"version";
const JOURNAL_SEQ_KEY: &[u8] = b"journal_seq";
const BUILDING_KEY: &[u8] = b"building";
/// Entries gathered, sorted and written at a time while (re)building the index (a few MB).
const BUILD_BATCH: usize = 20_000;
/// Longest cursor accepted, in characters (a real one is under 200).
const MAX_CURSOR: usize = 512;
/// Longest `kind` and `actor` filter accepted, in bytes.
const MAX_FILTER_TEXT: usize = 256;

/// Who recorded an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The device, in its journal, delivered to the hub.
    Device,
    /// The hub: about a device (connected, commands, deployments) or about its operators.
    Hub,
}

impl Source {
    pub fn parse(text: &str) -> Option<Source> {
        match text {
            "device" => Some(Source::Device),
            "hub" => Some(Source::Hub),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Device => "device",
            Source::Hub => "hub",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Source::Device => b'd',
            Source::Hub => b'h',
        }
    }

    fn from_byte(byte: u8) -> Option<Source> {
        match byte {
            b'd' => Some(Source::Device),
            b'h' => Some(Source::Hub),
            _ => None,
        }
    }
}

/// What is wrong with a fleet audit request, or what stopped an export.
#[derive(Debug, thiserror::Error)]
pub enum FleetAuditError {
    /// A query parameter's value is unusable; the API names the parameter.
    #[error("{parameter}={value:?}: {reason}")]
    BadParameter { parameter: &'static str, value: String, reason: &'static str },
    /// A query parameter the route does not know.
    #[error("unknown parameter {0:?}")]
    UnknownParameter(String),
    /// A query parameter given twice (which one should win is not for the hub to guess).
    #[error("parameter {0:?} is given more than once")]
    RepeatedParameter(&'static str),
    /// Reading the index failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The export's writer failed (the client went away, a full disk).
    #[error("audit export: {0}")]
    Write(#[source] std::io::Error),
}

impl FleetAuditError {
    /// The query parameter to blame, if a parameter is to blame.
    pub fn parameter(&self) -> Option<&str> {
        match self {
            FleetAuditError::BadParameter { parameter, .. } => Some(parameter),
            FleetAuditError::RepeatedParameter(parameter) => Some(parameter),
            FleetAuditError::UnknownParameter(parameter) => Some(parameter),
            FleetAuditError::Store(_) | FleetAuditError::Write(_) => None,
        }
    }
}

/// Which rows a page or an export wants. Every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events from or about this device.
    pub device: Option<String>,
    /// This kind or any kind under it: `gate` (or `gate.`) matches `gate` and `gate.denied`,
    /// not `gateway.up` — the rule of `GET /api/devices/{id}/audit`.
    pub kind: Option<String>,
    /// Exactly this actor, as shown: `user:ann`, `token:ci`, `anonymous@10.0.0.9`, `system`.
    pub actor: Option<String>,
    /// Unix seconds: events at or after.
    pub since: Option<u64>,
    /// Unix seconds: events before (not at).
    pub until: Option<u64>,
    pub source: Option<Source>,
    /// A group's devices' events and the hub's events about the group.
    pub group: Option<GroupScope>,
}

/// The `group` filter: its name and (filled in by the caller from the store, at the time of
/// the query) its members now. The group's own events have target `group:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupScope {
    pub name: String,
    pub members: std::collections::BTreeSet<String>,
}

/// What a filter looks at, borrowed from an index entry without decoding the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowHead<'a> {
    pub source: Source,
    pub device: Option<&'a str>,
    /// When the event is placed, in Unix milliseconds (see the module's notes on `at`).
    pub at_ms: u64,
    pub kind: &'a str,
    pub actor: &'a str,
}

impl AuditFilter {
    pub fn matches(&self, row: &RowHead<'_>) -> bool {
        self.in_group(row)
            && self.source.is_none_or(|s| s == row.source)
            && self.device.as_deref().is_none_or(|d| row.device == Some(d))
            && self.kind.as_deref().is_none_or(|k| kind_matches(k, row.kind))
            && self.actor.as_deref().is_none_or(|a| a == row.actor)
            && row.at_ms >= self.since_ms()
            && self.until_ms().is_none_or(|end| row.at_ms < end)
    }

    /// A group member's event, or (decided by [`AuditFilter::wants`] on the whole row) a hub
    /// event about no device, which may be about the group.
    fn in_group(&self, row: &RowHead<'_>) -> bool {
        let Some(group) = &self.group else { return true };
        match row.device {
            Some(device) => group.members.contains(device),
            None => row.source == Source::Hub,
        }
    }

    /// The checks [`AuditFilter::matches`] could not make from the index entry alone.
    pub fn wants(&self, row: &AuditRow) -> bool {
        match (&self.group, &row.device) {
            (Some(group), None) => row.target.strip_prefix("group:") == Some(group.name.as_str()),
            _ => true,
        }
    }

    pub(super) fn since_ms(&self) -> u64 {
        self.since.map_or(0, |s| s.saturating_mul(1000))
    }

    pub(super) fn until_ms(&self) -> Option<u64> {
        self.until.map(|u| u.saturating_mul(1000))
    }
}

fn kind_matches(wanted: &str, kind: &str) -> bool {
    let wanted = wanted.strip_suffix('.').unwrap_or(wanted);
    kind == wanted || kind.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('.'))
}

/// One event as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub source: Source,
    /// The device it is from or about; `None` for the hub's own (operators, logins).
    pub device: Option<String>,
    /// The device journal's seq for device events, the hub journal's for hub events.
    pub seq: u64,
    /// The event's id (none for hub events recorded before the hub kept a journal).
    pub id: Option<String>,
    /// RFC 3339, as the recorder wrote it.
    pub ts: String,
    pub kind: String,
    pub actor: String,
    pub target: String,
    pub level: Level,
    pub detail: serde_json::Value,
}

/// Where a page ended: an `audit_by_time` key, written as URL-safe base64 (no padding), so it
/// can go in a query string as it is. Only [`Cursor::parse`] makes one from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(Vec<u8>);

impl Cursor {
    /// A cursor a page gave out; `None` for anything else.
    pub fn parse(text: &str) -> Option<Cursor> {
        if text.len() > MAX_CURSOR {
            return None;
        }
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        KeyParts::from_time_key(&key)?;
        Some(Cursor(key))
    }
}

impl Cursor {
    /// The cursor of a row at this position: placed at `at_ms`, by `source`, of `device` (empty
    /// for none), its `seq` and `id`.
    pub(super) fn at(at_ms: u64, source: Source, device: &str, seq: u64, id: &str) -> Cursor {
        Cursor(KeyParts { at_ms, source, device, seq, id }.time_key())
    }

    /// The position [`Cursor::at`] made: (at_ms, source, device, seq, id).
    pub(super) fn position(&self) -> Option<(u64, Source, &str, u64, &str)> {
        KeyParts::from_time_key(&self.0).map(|p| (p.at_ms, p.source, p.device, p.seq, p.id))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.0))
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One page of the fleet audit, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    /// Pass as `before` for the next (older) page; `None` when nothing older is left.
    pub next: Option<Cursor>,
    /// The scan stopped at [`MAX_EXAMINED`] entries: older matching rows may remain, and
    /// `next` goes on from where it stopped.
    pub partial: bool,
    /// When `partial`: how far back the scan got (RFC 3339), for "searched back to …".
    pub scanned_to: Option<String>,
}

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// One JSON row a line (`application/x-ndjson`).
    #[default]
    JsonLines,
    /// [`CSV_HEADER`], then [`csv_line`] of each row.
    Csv,
}

/// Which route a query string is for: the parameters each takes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFor {
    /// `device kind actor since until source before limit`.
    Page,
    /// `device kind actor since until source format`.
    Export,
}

/// A fleet audit request's query string, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetQuery {
    pub filter: AuditFilter,
    pub before: Option<Cursor>,
    pub limit: usize,
    pub format: ExportFormat,
}

impl FleetQuery {
    /// Parses `device=…&kind=…&actor=…&since=…&until=…&source=device|hub&before=CURSOR&limit=N`
    /// (pages) or the same filters with `format=jsonl|csv` (exports). Values are URL-decoded.
    /// `since` and `until` are Unix seconds or RFC 3339 (`2026-12-05T10:00:00Z`).
    pub fn parse(query: Option<&str>, route: QueryFor) -> Result<FleetQuery, FleetAuditError> {
        let mut q = FleetQuery {
            filter: AuditFilter::default(),
            before: None,
            limit: DEFAULT_LIMIT,
            format: ExportFormat::default(),
        };
        let mut seen: Vec<&'static str> = Vec::new();
        // As given, for the error when `until` is not after `since`.
        let mut until_text = String::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let parameter = match (key.as_ref(), route) {
                ("device", _) => "device",
                ("kind", _) => "kind",
                ("actor", _) => "actor",
                ("since", _) => "since",
                ("until", _) => "until",
                ("source", _) => "source",
                ("group", _) => "group",
                ("before", QueryFor::Page) => "before",
                ("limit", QueryFor::Page) => "limit",
                ("format", QueryFor::Export) => "format",
                _ => return Err(FleetAuditError::UnknownParameter(key.into_owned())),
            };
            if seen.contains(&parameter) {
                return Err(FleetAuditError::RepeatedParameter(parameter));
            }
            seen.push(parameter);
            let bad = |reason| FleetAuditError::BadParameter { parameter, value: value.to_string(), reason };
            let value = value.as_ref();
            match parameter {
                "device" if redtether_proto::names::valid_name(value) => q.filter.device = Some(value.to_string()),
                "device" => return Err(bad("not a device id")),
                "group" if redtether_proto::names::valid_name(value) => {
                    q.filter.group = Some(GroupScope { name: value.to_string(), members: Default::default() })
                }
                "group" => return Err(bad("not a group name")),
                "kind" if kind_is_plausible(value) => q.filter.kind = Some(value.to_string()),
                "kind" => return Err(bad("not an event kind (letters, digits, '.', '_', '-')")),
                "actor" if text_is_plausible(value) => q.filter.actor = Some(value.to_string()),
                "actor" => return Err(bad("not an actor")),
                "since" => q.filter.since = Some(parse_time(value).ok_or_else(|| bad(TIME_FORMS))?),
                "until" => {
                    q.filter.until = Some(parse_time(value).ok_or_else(|| bad(TIME_FORMS))?);
                    until_text = value.to_string();
                }
                "source" => q.filter.source = Some(Source::parse(value).ok_or_else(|| bad("not device or hub"))?),
                "before" => q.before = Some(Cursor::parse(value).ok_or_else(|| bad("not a cursor this hub gave"))?),
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad("not a number from 1 to 500"))?
                }
                _ => {
                    q.format = match value {
                        "jsonl" => ExportFormat::JsonLines,
                        "csv" => ExportFormat::Csv,
                        _ => return Err(bad("not jsonl or csv")),
                    }
                }
            }
        }
        if let (Some(since), Some(until)) = (q.filter.since, q.filter.until)
            && until <= since
        {
            return Err(FleetAuditError::BadParameter {
                parameter: "until",
                value: until_text,
                reason: "is not after since",
            });
        }
        Ok(q)
    }
}

const TIME_FORMS: &str = "not Unix seconds or an RFC 3339 time";

/// Unix seconds, or an RFC 3339 time (to the second; `Z` may be left out).
fn parse_time(text: &str) -> Option<u64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    humantime::parse_rfc3339_weak(text).ok().map(redtether_proto::time::unix_of)
}

fn kind_is_plausible(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_FILTER_TEXT
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn text_is_plausible(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_FILTER_TEXT && !text.chars().any(char::is_control)
}

/// One CSV record of `row` in [`CSV_HEADER`]'s columns, ending in CRLF (RFC 4180): a field with
/// a comma, quote or line break is quoted, quotes doubled. A field a spreadsheet would take for
/// a formula (starting with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`, so opening an
/// export cannot run what a device or a failed login put in it.
pub fn csv_line(row: &AuditRow) -> String {
    let seq = row.seq.to_string();
    let detail = row.detail.to_string();
    let fields = [
        row.ts.as_str(),
        row.source.as_str(),
        row.device.as_deref().unwrap_or_default(),
        &seq,
        row.id.as_deref().unwrap_or_default(),
        &row.kind,
        &row.actor,
        &row.target,
        level_name(row.level),
        &detail,
    ];
    let mut line = String::with_capacity(fields.iter().map(|f| f.len() + 3).sum::<usize>() + 2);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        push_csv_field(&mut line, field);
    }
    line.push_str("\r\n");
    line
}

fn push_csv_field(line: &mut String, field: &str) {
    let formula = matches!(field.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'));
    let quoted = field.contains([',', '"', '\r', '\n']);
    if quoted {
        line.push('"');
    }
    if formula {
        line.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            line.push('"');
        }
        line.push(c);
    }
    if quoted {
        line.push('"');
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Instance => "instance",
        Level::Application => "application",
        Level::Team => "team",
    }
}

/// The parts of an index key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyParts<'a> {
    at_ms: u64,
    source: Source,
    /// Empty for an event without a device.
    device: &'a str,
    seq: u64,
    /// Empty for hub events (their seq is the hub journal's, unique by itself).
    id: &'a str,
}

impl<'a> KeyParts<'a> {
    fn time_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(18 + self.device.len() + self.id.len());
        key.extend_from_slice(&self.at_ms.to_be_bytes());
        key.push(self.source.byte());
        key.extend_from_slice(self.device.as_bytes());
        key.push(0);
        key.extend_from_slice(&self.seq.to_be_bytes());
        key.extend_from_slice(self.id.as_bytes());
        key
    }

    fn device_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(18 + self.device.len() + self.id.len());
        key.extend_from_slice(self.device.as_bytes());
        key.push(0);
        key.extend_from_slice(&self.at_ms.to_be_bytes());
        key.push(self.source.byte());
        key.extend_from_slice(&self.seq.to_be_bytes());
        key.extend_from_slice(self.id.as_bytes());
        key
    }

    fn from_time_key(key: &'a [u8]) -> Option<KeyParts<'a>> {
        let (at, rest) = key.split_first_chunk::<8>()?;
        let (&source, rest) = rest.split_first()?;
        let end = rest.iter().position(|&b| b == 0)?;
        let (seq, id) = rest[end + 1..].split_first_chunk::<8>()?;
        Some(KeyParts {
            at_ms: u64::from_be_bytes(*at),
            source: Source::from_byte(source)?,
            device: std::str::from_utf8(&rest[..end]).ok()?,
            seq: u64::from_be_bytes(*seq),
            id: std::str::from_utf8(id).ok()?,
        })
    }

    fn from_device_key(key: &'a [u8]) -> Option<KeyParts<'a>> {
        let end = key.iter().position(|&b| b == 0)?;
        let (at, rest) = key[end + 1..].split_first_chunk::<8>()?;
        let (&source, rest) = rest.split_first()?;
        let (seq, id) = rest.split_first_chunk::<8>()?;
        Some(KeyParts {
            at_ms: u64::from_be_bytes(*at),
            source: Source::from_byte(source)?,
            device: std::str::from_utf8(&key[..end]).ok()?,
            seq: u64::from_be_bytes(*seq),
            id: std::str::from_utf8(id).ok()?,
        })
    }

    fn device(&self) -> Option<&'a str> {
        (!self.device.is_empty()).then_some(self.device)
    }
}

/// The rest of a hub event's row, after its head, in an `audit_by_time` value.
#[derive(Serialize)]
struct RowBodyOut<'a, D: Serialize> {
    ts: &'a str,
    id: Option<&'a str>,
    target: &'a str,
    level: Level,
    detail: &'a D,
}

#[derive(Deserialize)]
struct RowBodyIn {
    ts: String,
    id: Option<String>,
    target: String,
    level: Level,
    detail: serde_json::Value,
}

/// Kind and actor, each a big-endian u32 length and the bytes.
fn push_head(out: &mut Vec<u8>, kind: &str, actor: &str) {
    for text in [kind, actor] {
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&text.as_bytes()[..len as usize]);
    }
}

/// Kind, actor, and what follows them.
fn split_head(value: &[u8]) -> Option<(&str, &str, &[u8])> {
    fn text(bytes: &[u8]) -> Option<(&str, &[u8])> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let text = rest.get(..len)?;
        Some((std::str::from_utf8(text).ok()?, &rest[len..]))
    }
    let (kind, rest) = text(value)?;
    let (actor, rest) = text(rest)?;
    Some((kind, actor, rest))
}

/// A hub event's row from the rest of its `audit_by_time` entry; `None` (logged) if unreadable.
fn hub_row(parts: &KeyParts<'_>, kind: &str, actor: &str, body: &[u8]) -> Option<AuditRow> {
    let Ok(body) = serde_json::from_slice::<RowBodyIn>(body) else { return unreadable(parts) };
    Some(AuditRow {
        source: parts.source,
        device: parts.device().map(str::to_string),
        seq: parts.seq,
        id: body.id,
        ts: body.ts,
        kind: kind.to_string(),
        actor: actor.to_string(),
        target: body.target,
        level: body.level,
        detail: body.detail,
    })
}

/// The row of an event the hub recorded (about `device`, if one).
pub(super) fn hub_event_row(device: Option<&str>, event: StoredEvent) -> AuditRow {
    event_row(Source::Hub, device, event)
}

/// A device event's row, from `device_audit`.
pub(super) fn device_row(device: &str, event: StoredEvent) -> AuditRow {
    event_row(Source::Device, Some(device), event)
}

fn event_row(source: Source, device: Option<&str>, event: StoredEvent) -> AuditRow {
    AuditRow {
        source,
        device: device.map(str::to_string),
        seq: event.seq,
        id: Some(event.id),
        ts: event.ts,
        kind: event.kind,
        actor: event.actor.to_string(),
        target: event.target,
        level: event.level,
        detail: serde_json::Value::Object(event.detail),
    }
}

/// Logs an index entry whose row cannot be read, and skips it: one bad record does not take
/// the console's audit page down.
fn unreadable(parts: &KeyParts<'_>) -> Option<AuditRow> {
    tracing::warn!(key = %hex::encode(parts.time_key()), "fleet audit: skipping a row that cannot be read");
    None
}

/// The wall clock in Unix milliseconds: no event is placed later than this.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where an event with timestamp `ts` goes, indexed at `now_ms`.
pub(super) fn placed_at(ts: &str, now_ms: u64) -> u64 {
    let Ok(t) = humantime::parse_rfc3339_weak(ts) else { return now_ms };
    let ms = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ms.min(now_ms)
}

/// The index entries of one event, encoded.
pub(super) struct IndexEntry {
    time_key: Vec<u8>,
    /// With its head as the value; `None` for an event without a device.
    device_entry: Option<(Vec<u8>, Vec<u8>)>,
    row: Vec<u8>,
}

impl IndexEntry {
    /// The entries of an event: `body` is the rest of a hub event's row (a device event's is
    /// read from `device_audit`).
    fn new<D: Serialize>(parts: KeyParts<'_>, kind: &str, actor: &str, body: Option<&RowBodyOut<'_, D>>) -> IndexEntry {
        let mut head = Vec::with_capacity(8 + kind.len() + actor.len());
        push_head(&mut head, kind, actor);
        let mut row = head.clone();
        if let Some(body) = body {
            row.extend_from_slice(&encode(body));
        }
        IndexEntry { time_key: parts.time_key(), device_entry: parts.device().map(|_| (parts.device_key(), head)), row }
    }

    /// An event `device` delivered.
    pub(super) fn device_event(device: &str, event: &StoredEvent, now_ms: u64) -> IndexEntry {
        let parts = KeyParts {
            at_ms: placed_at(&event.ts, now_ms),
            source: Source::Device,
            device,
            seq: event.seq,
            id: &event.id,
        };
        IndexEntry::new::<()>(parts, &event.kind, &event.actor.to_string(), None)
    }

    /// An event of the hub's journal, about `device` or about no device.
    pub(super) fn hub_event(device: Option<&str>, event: &StoredEvent, now_ms: u64) -> IndexEntry {
        let parts = KeyParts {
            at_ms: placed_at(&event.ts, now_ms),
            source: Source::Hub,
            device: device.unwrap_or_default(),
            seq: event.seq,
            id: "",
        };
        let body = RowBodyOut {
            ts: &event.ts,
            id: Some(&event.id),
            target: &event.target,
            level: event.level,
            detail: &event.detail,
        };
        IndexEntry::new(parts, &event.kind, &event.actor.to_string(), Some(&body))
    }

    /// An `events` row, which may predate the hub's journal: its actor is what `record_event`
    /// makes of the detail, its target the device.
    fn recorded_hub_event(event: &HubEvent, now_ms: u64) -> IndexEntry {
        let parts = KeyParts {
            at_ms: placed_at(&event.ts, now_ms),
            source: Source::Hub,
            device: &event.device,
            seq: event.seq,
            id: "",
        };
        let body = RowBodyOut {
            ts: &event.ts,
            id: None,
            target: &event.device,
            level: Level::Instance,
            detail: &event.detail,
        };
        IndexEntry::new(parts, &event.kind, &hub_event_actor(&event.detail).to_string(), Some(&body))
    }

    fn write(
        &self,
        by_time: &TransactionalTree,
        by_device: &TransactionalTree,
    ) -> Result<(), ConflictableTransactionError<Infallible>> {
        by_time.insert(self.time_key.as_slice(), self.row.as_slice())?;
        if let Some((key, head)) = &self.device_entry {
            by_device.insert(key.as_slice(), head.as_slice())?;
        }
        Ok(())
    }
}

/// Index entries gathered to be written in one transaction.
#[derive(Default)]
struct IndexBatch {
    by_time: sled::Batch,
    by_device: sled::Batch,
}

impl IndexBatch {
    fn add(&mut self, entry: IndexEntry) {
        self.by_time.insert(entry.time_key, entry.row);
        if let Some((key, head)) = entry.device_entry {
            self.by_device.insert(key, head);
        }
    }
}

/// Index entries gathered while (re)building, written in key order by [`SledStore::write_chunk`].
#[derive(Default)]
struct BuildChunk {
    by_time: Vec<(Vec<u8>, Vec<u8>)>,
    by_device: Vec<(Vec<u8>, Vec<u8>)>,
}

impl BuildChunk {
    fn add(&mut self, entry: IndexEntry) {
        self.by_time.push((entry.time_key, entry.row));
        self.by_device.extend(entry.device_entry);
    }
}

fn transaction_error(e: TransactionError<Infallible>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Db(e),
        TransactionError::Abort(never) => match never {},
    }
}

/// The index key in `audit_index_meta` holding a number, or 0.
fn meta_number(value: Option<sled::IVec>) -> u64 {
    value.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map_or(0, u64::from_be_bytes)
}

/// The device part of a `device_audit` key (device · 0 · seq · id).
fn device_of_audit_key(key: &[u8]) -> Option<&str> {
    let end = key.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&key[..end]).ok()
}

/// The key of the entry a scan looked at last, in the tree it scanned.
enum Position {
    Time(sled::IVec),
    Device(sled::IVec),
}

impl Position {
    fn parts(&self) -> Option<KeyParts<'_>> {
        match self {
            Position::Time(key) => KeyParts::from_time_key(key),
            Position::Device(key) => KeyParts::from_device_key(key),
        }
    }

    fn cursor(&self) -> Option<Cursor> {
        self.parts().map(|p| Cursor(p.time_key()))
    }
}

/// One index entry a scan looked at, and its row if the filter wants it.
struct Examined {
    position: Position,
    row: Option<AuditRow>,
}

type Scan<'a> = Box<dyn Iterator<Item = Result<Examined, StoreError>> + 'a>;

/// `tree`'s entries from `low` up to (not including) `high`, or none when the range is empty.
fn key_range(tree: &sled::Tree, low: Vec<u8>, high: Option<Vec<u8>>) -> Option<sled::Iter> {
    match high {
        Some(high) if high <= low => None,
        Some(high) => Some(tree.range(low..high)),
        None => Some(tree.range(low..)),
    }
}

/// The lower of two exclusive upper bounds (`None` is no bound).
fn lower_bound(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl SledStore {
    /// Up to `limit` (1 to [`MAX_LIMIT`]) rows matching `filter`, newest first, older than
    /// `before` (a cursor a previous page gave). Examines at most [`MAX_EXAMINED`] index
    /// entries: see [`AuditPage::partial`].
    pub fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        self.audit_page_examining(filter, before, limit, MAX_EXAMINED)
    }

    fn audit_page_examining(
        &self,
        filter: &AuditFilter,
        before: Option<&Cursor>,
        limit: usize,
        max_examined: usize,
    ) -> Result<AuditPage, StoreError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let mut rows = Vec::new();
        let mut scan = self.scan(filter, before);
        let mut examined = 0;
        while let Some(item) = scan.next() {
            let Examined { position, row } = item?;
            examined += 1;
            if let Some(row) = row {
                rows.push(row);
                if rows.len() == limit {
                    // A next page only when the range holds anything more, so the last page
                    // of a short list does not send the console for an empty one.
                    let next = scan.next().and_then(|_| position.cursor());
                    return Ok(AuditPage { rows, next, partial: false, scanned_to: None });
                }
            }
            if examined >= max_examined {
                let scanned_to = position.parts().map(|p| redtether_proto::time::format_unix(p.at_ms / 1000));
                return Ok(AuditPage { rows, next: position.cursor(), partial: true, scanned_to });
            }
        }
        Ok(AuditPage { rows, next: None, partial: false, scanned_to: None })
    }

    /// Calls `write` with every row matching `filter`, newest first, and returns how many.
    pub fn audit_export(
        &self,
        filter: &AuditFilter,
        mut write: impl FnMut(&AuditRow) -> std::io::Result<()>,
    ) -> Result<u64, FleetAuditError> {
        let mut written = 0;
        for item in self.scan(filter, None) {
            if let Some(row) = item?.row {
                write(&row).map_err(FleetAuditError::Write)?;
                written += 1;
            }
        }
        Ok(written)
    }

    fn scan<'a>(&'a self, filter: &'a AuditFilter, before: Option<&Cursor>) -> Scan<'a> {
        match filter.device.as_deref() {
            Some(device) => self.scan_device(device, filter, before),
            None => self.scan_fleet(filter, before),
        }
    }

    fn scan_fleet<'a>(&'a self, filter: &'a AuditFilter, before: Option<&Cursor>) -> Scan<'a> {
        let low = filter.since_ms().to_be_bytes().to_vec();
        let until = filter.until_ms().map(|end| end.to_be_bytes().to_vec());
        let Some(range) = key_range(&self.audit_by_time, low, lower_bound(until, before.map(|c| c.0.clone()))) else {
            return Box::new(std::iter::empty());
        };
        Box::new(range.rev().map(move |item| {
            let (key, value) = item?;
            let row = self.fleet_entry_row(filter, &key, &value)?;
            Ok(Examined { position: Position::Time(key), row })
        }))
    }

    fn scan_device<'a>(&'a self, device: &str, filter: &'a AuditFilter, before: Option<&Cursor>) -> Scan<'a> {
        let in_device = |rest: &[u8]| {
            let mut key = device.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(rest);
            key
        };
        let low = in_device(&filter.since_ms().to_be_bytes());
        // device · 1 sorts after every key of the device and before any other device's.
        let end = filter.until_ms().map_or_else(
            || {
                let mut key = device.as_bytes().to_vec();
                key.push(1);
                key
            },
            |end| in_device(&end.to_be_bytes()),
        );
        // A cursor from the fleet page (or another device's) is read as a time to go on from.
        let from_cursor =
            before.and_then(|c| KeyParts::from_time_key(&c.0)).map(|parts| KeyParts { device, ..parts }.device_key());
        let Some(range) = key_range(&self.audit_by_device, low, lower_bound(Some(end), from_cursor)) else {
            return Box::new(std::iter::empty());
        };
        Box::new(range.rev().map(move |item| {
            let (key, head) = item?;
            let row = self.device_entry_row(filter, &key, &head)?;
            Ok(Examined { position: Position::Device(key), row })
        }))
    }

    /// The row of an `audit_by_time` entry if `filter` wants it. An unreadable entry is logged
    /// and skipped, so one bad entry does not take the console's audit page down.
    fn fleet_entry_row(&self, filter: &AuditFilter, key: &[u8], value: &[u8]) -> Result<Option<AuditRow>, StoreError> {
        let (Some(parts), Some((kind, actor, body))) = (KeyParts::from_time_key(key), split_head(value)) else {
            tracing::warn!(key = %hex::encode(key), "fleet audit: skipping an unreadable index entry");
            return Ok(None);
        };
        let head = RowHead { source: parts.source, device: parts.device(), at_ms: parts.at_ms, kind, actor };
        if !filter.matches(&head) {
            return Ok(None);
        }
        Ok(self.load_row(&parts, kind, actor, Some(body))?.filter(|row| filter.wants(row)))
    }

    /// As [`SledStore::fleet_entry_row`], for an `audit_by_device` entry.
    fn device_entry_row(&self, filter: &AuditFilter, key: &[u8], head: &[u8]) -> Result<Option<AuditRow>, StoreError> {
        let (Some(parts), Some((kind, actor, _))) = (KeyParts::from_device_key(key), split_head(head)) else {
            tracing::warn!(key = %hex::encode(key), "fleet audit: skipping an unreadable device index entry");
            return Ok(None);
        };
        let head = RowHead { source: parts.source, device: parts.device(), at_ms: parts.at_ms, kind, actor };
        if !filter.matches(&head) {
            return Ok(None);
        }
        self.load_row(&parts, kind, actor, None)
    }

    /// The whole row of an index entry: a device event's from `device_audit`, a hub event's
    /// from its `audit_by_time` entry (`hub_body`, read here when the caller has not).
    fn load_row(
        &self,
        parts: &KeyParts<'_>,
        kind: &str,
        actor: &str,
        hub_body: Option<&[u8]>,
    ) -> Result<Option<AuditRow>, StoreError> {
        match (parts.source, hub_body) {
            (Source::Device, _) => {
                let value = self.audit.get(super::audit_key(parts.device, parts.seq, parts.id))?;
                Ok(value
                    .and_then(|v| decode::<StoredEvent>(&v).ok())
                    .map(|e| device_row(parts.device, e))
                    .or_else(|| unreadable(parts)))
            }
            (Source::Hub, Some(body)) => Ok(hub_row(parts, kind, actor, body)),
            (Source::Hub, None) => {
                let value = self.audit_by_time.get(parts.time_key())?;
                let body = value.as_deref().and_then(split_head).map(|(_, _, body)| body);
                Ok(body.and_then(|body| hub_row(parts, kind, actor, body)).or_else(|| unreadable(parts)))
            }
        }
    }

    /// Stores `device`'s new events and their index entries in one transaction.
    pub(super) fn store_device_events(&self, device: &str, fresh: &[&StoredEvent]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut events = sled::Batch::default();
        let mut index = IndexBatch::default();
        for event in fresh {
            events.insert(super::audit_key(device, event.seq, &event.id), encode(event));
            index.add(IndexEntry::device_event(device, event, now));
        }
        (&self.audit, &self.audit_by_time, &self.audit_by_device)
            .transaction(|(audit, by_time, by_device)| {
                audit.apply_batch(&events)?;
                by_time.apply_batch(&index.by_time)?;
                by_device.apply_batch(&index.by_device)?;
                Ok::<_, ConflictableTransactionError<Infallible>>(())
            })
            .map_err(transaction_error)
    }

    /// Indexes a hub journal event, with its `events` row if it is about a device, in one
    /// transaction that also moves `journal_seq` to it. The caller holds `hub_event_order`
    /// from journaling the event until this returned, so `journal_seq` only ever steps forward
    /// over events that are indexed.
    pub(super) fn index_hub_event(&self, event: &StoredEvent, events_row: Option<&HubEvent>) -> Result<(), StoreError> {
        let device = events_row.map(|e| e.device.as_str()).filter(|d| !d.is_empty());
        let entry = IndexEntry::hub_event(device, event, now_ms());
        let row = events_row.map(|e| (device_key(&e.device, &e.seq.to_be_bytes()), encode(e)));
        let seq = event.seq.to_be_bytes();
        (&self.events, &self.audit_by_time, &self.audit_by_device, &self.audit_index_meta)
            .transaction(|(events, by_time, by_device, meta)| {
                if let Some((key, value)) = &row {
                    events.insert(key.as_slice(), value.as_slice())?;
                }
                entry.write(by_time, by_device)?;
                meta.insert(JOURNAL_SEQ_KEY, &seq)?;
                Ok(())
            })
            .map_err(transaction_error)
    }

    /// Builds the index if this database has none (or an older layout), then indexes the hub
    /// journal's events it is missing. Run once, by `open`, before anything else uses the store.
    pub(super) fn open_fleet_audit_index(&self, root: &std::path::Path) -> Result<(), StoreError> {
        if meta_number(self.audit_index_meta.get(VERSION_KEY)?) != INDEX_VERSION {
            self.build_fleet_audit_index()?;
        }
        self.index_journal_from(root, meta_number(self.audit_index_meta.get(JOURNAL_SEQ_KEY)?))
    }

    /// Indexes every stored device event and `events` row; the journal's events follow (the
    /// `journal_seq` key is removed, so all of them). Over a million events this takes longer
    /// than a service manager waits for a start, so a build that was stopped goes on where it
    /// stopped: `building` holds the index version and the last `device_audit` key indexed,
    /// written once that chunk is flushed.
    fn build_fleet_audit_index(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let version = INDEX_VERSION.to_be_bytes();
        let resume_from = match self.audit_index_meta.get(BUILDING_KEY)? {
            Some(progress) if progress.starts_with(&version) => progress[version.len()..].to_vec(),
            _ => {
                self.audit_by_time.clear()?;
                self.audit_by_device.clear()?;
                self.audit_index_meta.remove(JOURNAL_SEQ_KEY)?;
                self.audit_index_meta.insert(BUILDING_KEY, &version)?;
                Vec::new()
            }
        };
        tracing::info!(resuming = !resume_from.is_empty(), "fleet audit: building the index of stored events");
        let now = now_ms();
        let mut batch = BuildChunk::default();
        let mut indexed = 0;
        let mut reported = Instant::now();
        for item in self.audit.range(resume_from..) {
            let (key, value) = item?;
            let (Some(device), Ok(event)) = (device_of_audit_key(&key), decode::<StoredEvent>(&value)) else {
                tracing::warn!(key = %hex::encode(&key), "fleet audit: skipping an unreadable device event");
                continue;
            };
            batch.add(IndexEntry::device_event(device, &event, now));
            indexed += 1;
            if batch.by_time.len() >= BUILD_BATCH {
                self.write_chunk(std::mem::take(&mut batch))?;
                self.flush()?;
                self.audit_index_meta.insert(BUILDING_KEY, [&version[..], &key].concat())?;
                if reported.elapsed() >= Duration::from_secs(5) {
                    tracing::info!(events = indexed, "fleet audit: building the index");
                    reported = Instant::now();
                }
            }
        }
        for item in self.events.iter().values() {
            let value = item?;
            let Ok(event) = decode::<HubEvent>(&value) else {
                tracing::warn!("fleet audit: skipping an unreadable hub event");
                continue;
            };
            batch.add(IndexEntry::recorded_hub_event(&event, now));
            indexed += 1;
            if batch.by_time.len() >= BUILD_BATCH {
                self.write_chunk(std::mem::take(&mut batch))?;
            }
        }
        self.write_chunk(batch)?;
        self.audit_index_meta.insert(VERSION_KEY, &version)?;
        self.audit_index_meta.remove(BUILDING_KEY)?;
        self.flush()?;
        tracing::info!(events = indexed, elapsed_ms = started.elapsed().as_millis() as u64, "fleet audit index built");
        Ok(())
    }

    /// Indexes the hub journal's events after seq `indexed`. An event about a device whose
    /// `events` row was lost with it (`record_event` writes sled lazily, and a hub killed
    /// within sled's flush interval loses the row while the journal keeps the line) gets its
    /// row back, so the device's own audit view has it again too.
    fn index_journal_from(&self, root: &std::path::Path, indexed: u64) -> Result<(), StoreError> {
        if self.journal.last_seq() <= indexed {
            return Ok(());
        }
        let text = crate::journal::read(root)?;
        let now = now_ms();
        let mut batch = BuildChunk::default();
        let mut restored = sled::Batch::default();
        let (mut last, mut restored_rows) = (indexed, 0);
        for event in crate::journal::events(&text).filter(|e| e.seq > indexed) {
            let key = device_key(&event.target, &event.seq.to_be_bytes());
            let has_row = self.events.contains_key(&key)?;
            let device = (has_row || journal_event_is_about_a_device(&event.kind, &event.target))
                .then_some(event.target.as_str())
                .filter(|d| !d.is_empty());
            if let Some(device) = device
                && !has_row
            {
                let detail = serde_json::Value::Object(event.detail.clone());
                let row = HubEvent {
                    seq: event.seq,
                    ts: event.ts.clone(),
                    device: device.into(),
                    kind: event.kind.clone(),
                    detail,
                };
                restored.insert(key, encode(&row));
                restored_rows += 1;
            }
            batch.add(IndexEntry::hub_event(device, &event, now));
            last = event.seq;
            if batch.by_time.len() >= BUILD_BATCH {
                self.events.apply_batch(std::mem::take(&mut restored))?;
                self.write_chunk(std::mem::take(&mut batch))?;
                self.audit_index_meta.insert(JOURNAL_SEQ_KEY, &last.to_be_bytes())?;
            }
        }
        self.events.apply_batch(restored)?;
        self.write_chunk(batch)?;
        self.audit_index_meta.insert(JOURNAL_SEQ_KEY, &last.to_be_bytes())?;
        tracing::info!(from = indexed, to = last, restored_rows, "fleet audit: hub journal events indexed");
        self.flush()
    }

    /// Writes entries gathered while (re)building, not in one transaction: a build that stops
    /// goes on from its last flushed chunk. In key order, because a build reads device events
    /// device by device, so their times come in no order, and sled inserts keys in order
    /// several times faster than scattered ones (a `sled::Batch` applies in hash order).
    fn write_chunk(&self, chunk: BuildChunk) -> Result<(), StoreError> {
        for (tree, mut entries) in [(&self.audit_by_time, chunk.by_time), (&self.audit_by_device, chunk.by_device)] {
            entries.sort_unstable();
            for (key, value) in entries {
                tree.insert(key, value)?;
            }
        }
        Ok(())
    }
}

/// Whether a hub journal event was recorded about a device (`record_event`) rather than about
/// the hub's operators (`record`), for an event whose `events` row is lost. Operators' events
/// target `hub` or `operator:<name>` (not a device id: no `:`) and are all `operator.*` kinds
/// but `operator.command`, so a device named `hub` is still told apart.
pub(super) fn journal_event_is_about_a_device(kind: &str, target: &str) -> bool {
    let account_kind = kind.starts_with("operator.") && kind != HubEventKind::OperatorCommand.as_str();
    redtether_proto::names::valid_name(target) && !account_kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::audit::{Actor, AuditEvent, AuditKind, GENESIS};
    use serde_json::json;

    fn head<'a>(source: Source, device: Option<&'a str>, at_ms: u64, kind: &'a str, actor: &'a str) -> RowHead<'a> {
        RowHead { source, device, at_ms, kind, actor }
    }

    #[test]
    fn each_condition_of_a_filter_must_hold() {
        let row = head(Source::Device, Some("pump-1"), 1_000_000, "gate.denied", "user:ann");
        let hub_only = head(Source::Hub, None, 1_000_000, "operator.login", "user:ann");
        assert!(AuditFilter::default().matches(&row));
        let only = |f: AuditFilter| f.matches(&row);
        assert!(only(AuditFilter { device: Some("pump-1".into()), ..Default::default() }));
        assert!(!only(AuditFilter { device: Some("pump-10".into()), ..Default::default() }));
        assert!(!AuditFilter { device: Some("pump-1".into()), ..Default::default() }.matches(&hub_only));
        for kind in ["gate", "gate.", "gate.denied"] {
            assert!(only(AuditFilter { kind: Some(kind.into()), ..Default::default() }), "{kind}");
        }
        for kind in ["gat", "gate.d", "gate.denied.more", "denied"] {
            assert!(!only(AuditFilter { kind: Some(kind.into()), ..Default::default() }), "{kind}");
        }
        assert!(!AuditFilter { kind: Some("gate".into()), ..Default::default() }.matches(&head(
            Source::Device,
            Some("pump-1"),
            1_000_000,
            "gateway.up",
            "system"
        )));
        assert!(only(AuditFilter { actor: Some("user:ann".into()), ..Default::default() }));
        assert!(!only(AuditFilter { actor: Some("ann".into()), ..Default::default() }), "the actor as shown, exactly");
        assert!(only(AuditFilter { source: Some(Source::Device), ..Default::default() }));
        assert!(!only(AuditFilter { source: Some(Source::Hub), ..Default::default() }));
        // since is inclusive, until exclusive, both in whole seconds.
        assert!(only(AuditFilter { since: Some(1000), until: Some(1001), ..Default::default() }));
        assert!(!only(AuditFilter { since: Some(1001), ..Default::default() }));
        assert!(!only(AuditFilter { until: Some(1000), ..Default::default() }));
        assert!(
            only(AuditFilter { since: Some(u64::MAX / 2000), ..Default::default() }) == (1_000_000 >= u64::MAX / 2)
        );
    }

    #[test]
    fn queries_are_parsed_strictly_and_errors_name_the_parameter() {
        let q = FleetQuery::parse(None, QueryFor::Page).unwrap();
        assert_eq!((q.filter, q.before, q.limit), (AuditFilter::default(), None, DEFAULT_LIMIT));
        let q = FleetQuery::parse(
            Some("device=pump-1&kind=gate.&actor=user%3Aann&since=1700000000&until=2026-12-05T10:00:00Z&source=hub&limit=7&group=prod"),
            QueryFor::Page,
        )
        .unwrap();
        assert_eq!(
            q.filter,
            AuditFilter {
                device: Some("pump-1".into()),
                kind: Some("gate.".into()),
                actor: Some("user:ann".into()),
                since: Some(1_700_000_000),
                until: Some(1_796_464_800),
                source: Some(Source::Hub),
                group: Some(GroupScope { name: "prod".into(), members: Default::default() }),
            }
        );
        assert_eq!(q.limit, 7);
        let q = FleetQuery::parse(Some("format=csv&actor=anonymous@10.0.0.9"), QueryFor::Export).unwrap();
        assert_eq!((q.format, q.filter.actor.as_deref()), (ExportFormat::Csv, Some("anonymous@10.0.0.9")));
        assert_eq!(
            FleetQuery::parse(Some("since=2026-12-05T10:00:00.900Z"), QueryFor::Page).unwrap().filter.since,
            Some(1_796_464_800)
        );

        for (query, route, parameter) in [
            ("device=a/b", QueryFor::Page, "device"),
            ("device=", QueryFor::Page, "device"),
            ("kind=a%20b", QueryFor::Page, "kind"),
            ("kind=", QueryFor::Page, "kind"),
            ("actor=", QueryFor::Page, "actor"),
            ("actor=a%0Ab", QueryFor::Page, "actor"),
            ("since=yesterday", QueryFor::Page, "since"),
            ("since=-5", QueryFor::Page, "since"),
            ("until=99999999999999999999999", QueryFor::Page, "until"),
            ("since=20&until=10", QueryFor::Page, "until"),
            ("since=10&until=10", QueryFor::Page, "until"),
            ("source=both", QueryFor::Page, "source"),
            ("before=xyz", QueryFor::Page, "before"),
            ("limit=0", QueryFor::Page, "limit"),
            ("limit=501", QueryFor::Page, "limit"),
            ("limit=ten", QueryFor::Page, "limit"),
            ("format=xml", QueryFor::Export, "format"),
            ("kind=a&kind=b", QueryFor::Page, "kind"),
            ("format=csv", QueryFor::Page, "format"),
            ("limit=5", QueryFor::Export, "limit"),
            ("before=AAAA", QueryFor::Export, "before"),
            ("after=3", QueryFor::Page, "after"),
        ] {
            let e = FleetQuery::parse(Some(query), route).unwrap_err();
            assert_eq!(e.parameter(), Some(parameter), "{query}: {e}");
        }
    }

    #[test]
    fn journal_events_about_devices_are_told_from_operators_events() {
        for (kind, target) in [("device.connected", "pump-1"), ("token.created", "pump-1"), ("operator.command", "hub")]
        {
            assert!(journal_event_is_about_a_device(kind, target), "{kind} {target}");
        }
        for (kind, target) in [
            ("operator.login", "hub"),
            ("operator.added", "operator:ann"),
            ("token.created", "operator:ann"),
            ("enroll.refused", ""),
        ] {
            assert!(!journal_event_is_about_a_device(kind, target), "{kind} {target}");
        }
    }

    #[test]
    fn cursors_are_url_safe_and_only_index_keys_pass() {
        let parts = KeyParts { at_ms: 42, source: Source::Device, device: "pump-1", seq: 7, id: "e-7" };
        let cursor = Cursor(parts.time_key());
        let text = cursor.to_string();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)), "{text}");
        assert_eq!(Cursor::parse(&text), Some(cursor));
        assert_eq!(KeyParts::from_device_key(&parts.device_key()), Some(parts));
        for bad in ["", "!!", "AAAA", &"A".repeat(600)] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    fn row(device: Option<&str>, kind: &str, actor: &str, target: &str, detail: serde_json::Value) -> AuditRow {
        AuditRow {
            source: Source::Device,
            device: device.map(str::to_string),
            seq: 3,
            id: Some("e-3".into()),
            ts: "2026-12-05T10:00:00.000Z".into(),
            kind: kind.into(),
            actor: actor.into(),
            target: target.into(),
            level: Level::Instance,
            detail,
        }
    }

    #[test]
    fn csv_lines_are_quoted_and_defused() {
        let plain = row(Some("pump-1"), "auth.failed", "system", "/flows", json!({}));
        assert_eq!(
            csv_line(&plain),
            "2026-12-05T10:00:00.000Z,device,pump-1,3,e-3,auth.failed,system,/flows,instance,{}\r\n"
        );
        assert_eq!(CSV_HEADER.split(',').count(), csv_line(&plain).split(',').count());

        let tricky =
            row(None, "auth.failed", "anonymous@10.0.0.9", "say \"hi\", then\nleave", json!({"a": 1, "b": "x"}));
        assert_eq!(
            csv_line(&tricky),
            "2026-12-05T10:00:00.000Z,device,,3,e-3,auth.failed,anonymous@10.0.0.9,\"say \"\"hi\"\", then\nleave\",instance,\"{\"\"a\"\":1,\"\"b\"\":\"\"x\"\"}\"\r\n"
        );
        for (target, written) in [
            ("=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\""),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tcmd", "'\tcmd"),
            ("a=b", "a=b"),
        ] {
            let line = csv_line(&row(Some("pump-1"), "k", "system", target, json!({})));
            assert!(line.contains(&format!(",{written},instance,")), "{target:?} → {line:?}");
        }
        let line = csv_line(&row(Some("-pump"), "k", "system", "t", json!({})));
        assert!(line.contains(",'-pump,3,"), "a device id is defused too: {line:?}");
    }

    // The store: events from two devices and the hub, placed at known times.

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("hub")).unwrap();
        (dir, s)
    }

    /// `2026-01-01T00:00:{second}`.
    fn ts(second: u64) -> String {
        redtether_proto::time::format_unix(1_767_225_600 + second).replace('Z', ".000Z")
    }

    fn event(seq: u64, kind: AuditKind, actor: Actor, second: u64) -> StoredEvent {
        let e = AuditEvent::new(kind, actor, "/flows").with("n", seq);
        StoredEvent::seal(e, seq, format!("id-{seq}"), ts(second), &GENESIS).0
    }

    /// Waits for the wall clock's next millisecond, so the hub event recorded next is placed
    /// after the last (events of one millisecond are ordered by source and device, not seq).
    fn next_millisecond() {
        let now = now_ms();
        while now_ms() == now {
            std::hint::spin_loop();
        }
    }

    /// Device events at even seconds (pump-1) and odd seconds (pump-2), hub events now.
    fn fleet(s: &SledStore) {
        let pump1: Vec<StoredEvent> = (1..=10)
            .map(|i| {
                let kind = if i % 2 == 0 { AuditKind::AuthFailed } else { AuditKind::AdminWrite };
                event(i, kind, Actor::user("ann"), 2 * i)
            })
            .collect();
        let pump2: Vec<StoredEvent> =
            (1..=10).map(|i| event(i, AuditKind::NodeRedStarted, Actor::System, 2 * i + 1)).collect();
        s.ingest_audit("pump-1", &pump1).unwrap();
        s.ingest_audit("pump-2", &pump2).unwrap();
        s.record_event("pump-1", HubEventKind::DeviceConnected, json!({"addr": "10.0.0.1:5000"})).unwrap();
        next_millisecond();
        s.record(HubEventKind::OperatorLogin, Actor::user("ann"), "hub", json!({"method": "password"})).unwrap();
        next_millisecond();
        s.record_event("pump-2", HubEventKind::OperatorCommand, json!({"operator": "bob", "command": "restart"}))
            .unwrap();
    }

    fn all(s: &SledStore, filter: &AuditFilter) -> Vec<AuditRow> {
        let page = s.audit_page(filter, None, MAX_LIMIT).unwrap();
        assert_eq!((page.next.as_ref(), page.partial), (None, false));
        page.rows
    }

    fn names(rows: &[AuditRow]) -> Vec<String> {
        rows.iter().map(|r| format!("{}:{}:{}", r.source.as_str(), r.device.as_deref().unwrap_or("-"), r.seq)).collect()
    }

    #[test]
    fn the_fleet_is_newest_first_across_devices_and_sources() {
        let (_d, s) = store();
        fleet(&s);
        let rows = all(&s, &AuditFilter::default());
        let mut expected = vec!["hub:pump-2:3".to_string(), "hub:-:2".into(), "hub:pump-1:1".into()];
        for second in (2..=21).rev() {
            let (device, seq) = if second % 2 == 0 { ("pump-1", second / 2) } else { ("pump-2", (second - 1) / 2) };
            expected.push(format!("device:{device}:{seq}"));
        }
        assert_eq!(names(&rows), expected);

        let command = &rows[0];
        assert_eq!(
            (command.kind.as_str(), command.actor.as_str(), command.target.as_str()),
            ("operator.command", "user:bob", "pump-2")
        );
        assert_eq!(command.detail["command"], "restart");
        assert!(command.id.is_some());
        let login = &rows[1];
        assert_eq!((login.device.as_deref(), login.target.as_str(), login.actor.as_str()), (None, "hub", "user:ann"));
        let newest_device = &rows[3];
        assert_eq!(newest_device.ts, ts(21));
        assert_eq!((newest_device.id.as_deref(), newest_device.kind.as_str()), (Some("id-10"), "nodered.started"));
        assert_eq!(newest_device.detail, json!({"n": 10}));
        assert_eq!(serde_json::to_value(newest_device).unwrap()["source"], "device");
    }

    #[test]
    fn a_device_clock_ahead_does_not_pin_its_events_to_the_top() {
        let (_d, s) = store();
        let future = StoredEvent::seal(
            AuditEvent::new(AuditKind::AgentStarted, Actor::System, "agent"),
            1,
            "f".into(),
            "2099-01-01T00:00:00.000Z".into(),
            &GENESIS,
        )
        .0;
        s.ingest_audit("pump-1", &[future]).unwrap();
        next_millisecond();
        s.record(HubEventKind::OperatorLogin, Actor::user("ann"), "hub", json!({})).unwrap();
        let rows = all(&s, &AuditFilter::default());
        assert_eq!(names(&rows), ["hub:-:1", "device:pump-1:1"]);
        assert_eq!(rows[1].ts, "2099-01-01T00:00:00.000Z", "shown as the device wrote it");
    }

    #[test]
    fn every_filter_selects_its_rows() {
        let (_d, s) = store();
        fleet(&s);
        let by = |f: AuditFilter| names(&all(&s, &f));
        let pump1 = by(AuditFilter { device: Some("pump-1".into()), ..Default::default() });
        assert_eq!(pump1.len(), 11);
        assert_eq!(pump1[0], "hub:pump-1:1", "the hub's events about the device are in its tab");
        assert!(pump1[1..].iter().all(|n| n.starts_with("device:pump-1:")));
        assert!(by(AuditFilter { device: Some("pump-".into()), ..Default::default() }).is_empty(), "not a prefix");
        assert_eq!(by(AuditFilter { kind: Some("auth".into()), ..Default::default() }).len(), 5);
        assert_eq!(
            by(AuditFilter { kind: Some("operator.".into()), ..Default::default() }),
            ["hub:pump-2:3", "hub:-:2"]
        );
        assert_eq!(by(AuditFilter { actor: Some("user:bob".into()), ..Default::default() }), ["hub:pump-2:3"]);
        assert_eq!(by(AuditFilter { actor: Some("user:ann".into()), ..Default::default() }).len(), 11);
        assert_eq!(by(AuditFilter { source: Some(Source::Hub), ..Default::default() }).len(), 3);
        assert_eq!(by(AuditFilter { source: Some(Source::Device), ..Default::default() }).len(), 20);
        let window =
            AuditFilter { since: Some(1_767_225_600 + 5), until: Some(1_767_225_600 + 8), ..Default::default() };
        assert_eq!(by(window.clone()), ["device:pump-2:3", "device:pump-1:3", "device:pump-2:2"], "5 ≤ s < 8");
        assert_eq!(by(AuditFilter { device: Some("pump-2".into()), ..window }), ["device:pump-2:3", "device:pump-2:2"]);
        let combined = AuditFilter {
            device: Some("pump-1".into()),
            kind: Some("admin.write".into()),
            until: Some(1_767_225_600 + 10),
            ..Default::default()
        };
        assert_eq!(by(combined), ["device:pump-1:3", "device:pump-1:1"]);
    }

    /// Every page of `filter` from the first, `limit` rows each, examining at most `cap`.
    fn pages(s: &SledStore, filter: &AuditFilter, limit: usize, cap: usize) -> Vec<AuditPage> {
        let mut pages: Vec<AuditPage> = Vec::new();
        loop {
            let before = pages.last().and_then(|p| p.next.clone());
            if !pages.is_empty() && before.is_none() {
                return pages;
            }
            let cursor = before.map(|c| Cursor::parse(&c.to_string()).unwrap());
            pages.push(s.audit_page_examining(filter, cursor.as_ref(), limit, cap).unwrap());
            assert!(pages.len() < 100, "paging does not end");
        }
    }

    #[test]
    fn a_group_filter_takes_its_members_and_its_own_events_only() {
        let (_d, s) = store();
        for device in ["a", "b", "c"] {
            s.record_event(device, HubEventKind::DeviceConnected, json!({})).unwrap();
        }
        s.record(HubEventKind::GroupCreated, Actor::user("ann"), "group:prod", json!({})).unwrap();
        s.record(HubEventKind::GroupCreated, Actor::user("ann"), "group:production", json!({})).unwrap();
        s.record(HubEventKind::OperatorLogin, Actor::user("ann"), "hub", json!({})).unwrap();
        s.record(HubEventKind::RolloutStarted, Actor::user("ann"), "group:prod", json!({})).unwrap();
        let members = ["a", "b"].map(String::from).into_iter().collect();
        let filter = AuditFilter { group: Some(GroupScope { name: "prod".into(), members }), ..Default::default() };
        let rows: Vec<AuditRow> = pages(&s, &filter, 2, MAX_EXAMINED).into_iter().flat_map(|p| p.rows).collect();
        // (Events of one millisecond are ordered by source and device, not as recorded.)
        let mut seen: Vec<(Option<&str>, &str)> = rows.iter().map(|r| (r.device.as_deref(), r.kind.as_str())).collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (None, "group.created"),
                (None, "rollout.started"),
                (Some("a"), "device.connected"),
                (Some("b"), "device.connected")
            ]
        );
        assert!(rows.iter().filter(|r| r.device.is_none()).all(|r| r.target == "group:prod"));
    }

    #[test]
    fn fleet_and_group_audit_page_through_ten_thousand_events_exactly() {
        let (_d, s) = store();
        // 40 devices, the first 10 in group "prod"; 10,000 device-delivered events, and the
        // hub's events about two groups and the operators.
        let device = |i: usize| format!("dev-{i:02}");
        let mut expected_group = 0;
        for i in 0..40 {
            let chained: Vec<StoredEvent> =
                (1..=250).map(|seq| event(seq, AuditKind::AdminWrite, Actor::System, seq)).collect();
            s.ingest_audit(&device(i), &chained).unwrap();
            if i < 10 {
                expected_group += 250;
            }
        }
        for (target, n) in [("group:prod", 7), ("group:test", 5), ("hub", 3)] {
            for _ in 0..n {
                s.record(HubEventKind::GroupDevicesChanged, Actor::user("ann"), target, json!({})).unwrap();
            }
        }
        expected_group += 7;
        let all: Vec<AuditRow> =
            pages(&s, &AuditFilter::default(), 500, MAX_EXAMINED).into_iter().flat_map(|p| p.rows).collect();
        assert_eq!(all.len(), 10_000 + 15);
        let members = (0..10).map(device).collect();
        let filter = AuditFilter { group: Some(GroupScope { name: "prod".into(), members }), ..Default::default() };
        let pages = pages(&s, &filter, 137, MAX_EXAMINED);
        assert!(pages.len() > 10, "paged");
        let rows: Vec<AuditRow> = pages.into_iter().flat_map(|p| p.rows).collect();
        assert_eq!(rows.len(), expected_group);
        let mut keys: Vec<(Option<String>, u64, String)> =
            rows.iter().map(|r| (r.device.clone(), r.seq, r.source.as_str().to_string())).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), expected_group, "every row once");
        assert!(rows.iter().all(|r| match &r.device {
            Some(d) => d.as_str() < "dev-10",
            None => r.target == "group:prod",
        }));
        // The same as the fleet's rows filtered by hand, in the same order.
        let by_hand: Vec<&AuditRow> =
            all.iter().filter(|r| r.device.as_deref().map_or(r.target == "group:prod", |d| d < "dev-10")).collect();
        assert_eq!(by_hand, rows.iter().collect::<Vec<_>>());
    }

    #[test]
    fn paging_returns_every_row_once_in_order() {
        let (_d, s) = store();
        fleet(&s);
        for filter in [
            AuditFilter::default(),
            AuditFilter { device: Some("pump-1".into()), ..Default::default() },
            AuditFilter { kind: Some("auth".into()), ..Default::default() },
            AuditFilter { source: Some(Source::Device), since: Some(1_767_225_600 + 3), ..Default::default() },
        ] {
            let whole = all(&s, &filter);
            for limit in [1, 3, whole.len()] {
                let pages = pages(&s, &filter, limit, MAX_EXAMINED);
                assert!(pages.iter().all(|p| !p.partial && p.rows.len() <= limit));
                let paged: Vec<AuditRow> = pages.into_iter().flat_map(|p| p.rows).collect();
                assert_eq!(names(&paged), names(&whole), "{filter:?}, {limit} a page");
            }
        }
        let first = s.audit_page(&AuditFilter::default(), None, 23).unwrap();
        assert_eq!((first.rows.len(), first.next), (23, None), "an exactly full last page has no next");
    }

    #[test]
    fn a_page_stops_after_the_cap_and_says_where() {
        let (_d, s) = store();
        fleet(&s);
        // Only the two oldest rows match: the newest 21 entries are examined in vain.
        let rare = AuditFilter { until: Some(1_767_225_600 + 4), ..Default::default() };
        let rare = AuditFilter { source: Some(Source::Device), ..rare };
        let pages = pages(&s, &AuditFilter { kind: Some("admin.write".into()), ..Default::default() }, 50, 4);
        let found: Vec<String> = pages.iter().flat_map(|p| names(&p.rows)).collect();
        assert_eq!(
            found,
            ["device:pump-1:9", "device:pump-1:7", "device:pump-1:5", "device:pump-1:3", "device:pump-1:1"]
        );
        assert!(pages[0].partial && pages[0].scanned_to.is_some());
        assert_eq!(pages.len(), 6, "23 entries, 4 a request");

        let first = s
            .audit_page_examining(&AuditFilter { kind: Some("none".into()), ..Default::default() }, None, 50, 5)
            .unwrap();
        assert_eq!((first.rows.len(), first.partial), (0, true));
        assert!(first.next.is_some(), "a cursor to go on from even with no rows");
        assert_eq!(names(&all(&s, &rare)), ["device:pump-2:1", "device:pump-1:1"]);
    }

    #[test]
    fn the_export_streams_every_match_and_stops_when_the_writer_fails() {
        let (_d, s) = store();
        fleet(&s);
        let mut rows = Vec::new();
        let count = s.audit_export(&AuditFilter::default(), |r| {
            rows.push(r.clone());
            Ok(())
        });
        assert_eq!(count.unwrap(), 23);
        assert_eq!(rows, all(&s, &AuditFilter::default()));
        let mut calls = 0;
        let failed = s.audit_export(&AuditFilter::default(), |_| {
            calls += 1;
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        });
        assert!(matches!(failed, Err(FleetAuditError::Write(_))));
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_database_written_without_the_index_is_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub");
        let before = {
            let s = SledStore::open(&path).unwrap();
            fleet(&s);
            // A hub event from before the hub kept a journal: in `events` only, its seq from sled.
            let old = HubEvent {
                seq: 900,
                ts: ts(100),
                device: "pump-2".into(),
                kind: "device.enrolled".into(),
                detail: json!({"serial": "aa"}),
            };
            s.events.insert(device_key("pump-2", &old.seq.to_be_bytes()), encode(&old)).unwrap();
            s.flush().unwrap();
            all(&s, &AuditFilter::default())
        };
        {
            // What an older hub leaves: no index trees at all.
            let db = sled::Config::new().path(path.join("db")).open().unwrap();
            for tree in ["audit_by_time", "audit_by_device", "audit_index_meta"] {
                assert!(db.drop_tree(tree).unwrap());
            }
            db.flush().unwrap();
        }
        let s = SledStore::open(&path).unwrap();
        let after = all(&s, &AuditFilter::default());
        assert_eq!(after.len(), before.len() + 1);
        let old = &after[3];
        assert_eq!(
            (old.seq, old.id.as_deref(), old.ts.as_str(), old.actor.as_str()),
            (900, None, ts(100).as_str(), "system")
        );
        let mut without_old = after.clone();
        without_old.remove(3);
        assert_eq!(without_old, before, "rebuilt exactly as written");
        assert_eq!(all(&s, &AuditFilter { device: Some("pump-2".into()), ..Default::default() }).len(), 12);
        // Opened again: built already, nothing doubles.
        drop(s);
        let s = SledStore::open(&path).unwrap();
        assert_eq!(all(&s, &AuditFilter::default()), after);
    }

    #[test]
    fn a_stopped_build_goes_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub");
        let whole = {
            let s = SledStore::open(&path).unwrap();
            fleet(&s);
            let whole = all(&s, &AuditFilter::default());
            // As a build stopped after pump-1's events leaves it: pump-2's not indexed yet.
            for row in whole.iter().filter(|r| r.source == Source::Device && r.device.as_deref() == Some("pump-2")) {
                let at = placed_at(&row.ts, now_ms());
                let parts = KeyParts { at_ms: at, source: Source::Device, device: "pump-2", seq: row.seq, id: "" };
                let id = row.id.clone().unwrap();
                s.audit_by_time.remove(KeyParts { id: &id, ..parts }.time_key()).unwrap();
                s.audit_by_device.remove(KeyParts { id: &id, ..parts }.device_key()).unwrap();
            }
            // And one of pump-1's lost, which only a build from the start would bring back.
            s.audit_by_time
                .remove(
                    KeyParts {
                        at_ms: placed_at(&ts(2), now_ms()),
                        source: Source::Device,
                        device: "pump-1",
                        seq: 1,
                        id: "id-1",
                    }
                    .time_key(),
                )
                .unwrap();
            s.audit_index_meta.remove(VERSION_KEY).unwrap();
            let progress = [&INDEX_VERSION.to_be_bytes()[..], &super::super::audit_key("pump-1", 10, "id-10")].concat();
            s.audit_index_meta.insert(BUILDING_KEY, progress).unwrap();
            s.flush().unwrap();
            whole
        };
        let s = SledStore::open(&path).unwrap();
        let rows = all(&s, &AuditFilter::default());
        assert_eq!(rows.len(), whole.len() - 1);
        assert!(!names(&rows).contains(&"device:pump-1:1".to_string()), "resumed, not started over");
        assert_eq!(all(&s, &AuditFilter { device: Some("pump-2".into()), ..Default::default() }).len(), 11);
        assert_eq!(s.audit_index_meta.get(BUILDING_KEY).unwrap(), None);
    }

    #[test]
    fn hub_journal_events_the_index_missed_are_indexed_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub");
        {
            let s = SledStore::open(&path).unwrap();
            fleet(&s);
            next_millisecond();
            // Journaled, then the hub died before sled had them.
            let lazy = crate::journal::Durability::Lazy;
            s.journal.record(HubEventKind::OperatorLogout, Actor::user("ann"), "hub", json!({}), lazy).unwrap();
            next_millisecond();
            let detail = json!({"reason": "closed"});
            s.journal.record(HubEventKind::DeviceDisconnected, Actor::System, "pump-1", detail, lazy).unwrap();
            assert_eq!(all(&s, &AuditFilter::default()).len(), 23);
        }
        let s = SledStore::open(&path).unwrap();
        let rows = all(&s, &AuditFilter::default());
        assert_eq!(names(&rows)[..5], ["hub:pump-1:5", "hub:-:4", "hub:pump-2:3", "hub:-:2", "hub:pump-1:1"]);
        assert_eq!((rows[0].kind.as_str(), rows[1].kind.as_str()), ("device.disconnected", "operator.logout"));
        let kinds: Vec<String> = s.events("pump-1").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["device.connected", "device.disconnected"], "the device's own view has it back");
        // And the index goes on from there.
        s.record(HubEventKind::OperatorLogin, Actor::user("ann"), "hub", json!({})).unwrap();
        drop(s);
        let s = SledStore::open(&path).unwrap();
        assert_eq!(all(&s, &AuditFilter::default()).len(), 26);
    }
}
