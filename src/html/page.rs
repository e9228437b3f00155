//! The page every report shares: the shell (inline CSS and JS, a Content-Security-Policy that
//! forbids any network access), summary cards, key/value sections, and the paged, sortable,
//! filterable tables.
//!
//! A table's rows are one JSON array inside `<script type="application/json">`, written one
//! row at a time; the inline script renders a page of [`PAGE_SIZE`] rows at a time (all of
//! them when printing) and only ever puts data into the DOM as text (`textContent`), never
//! as markup.

use std::io::{self, Write};

use serde_json::{Map, Value};

use super::escape::{text, write_script_json, write_text};

/// Rows shown per table page.
pub const PAGE_SIZE: usize = 200;

/// Cards shown per page of a card list.
pub const CARD_PAGE_SIZE: usize = 50;

/// How a column's cells are shown, sorted and filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// Text that may be long (a reason, a list): wraps instead of widening the table.
    Long,
    /// Sorted as numbers, right-aligned.
    Num,
    /// The table's status: coloured, and offered in the status select.
    Status,
}

/// One column: its header and how its cell comes out of a row's JSON.
pub struct Column {
    pub label: &'static str,
    pub kind: Kind,
    /// The cell: a string, a number, null, or `[text, title]` (an id shown short, whole on
    /// hover).
    pub get: fn(&Value) -> Value,
    /// Hidden when no row has a value in it (a field older reports do not have).
    pub optional: bool,
}

impl Column {
    pub const fn new(label: &'static str, kind: Kind, get: fn(&Value) -> Value) -> Self {
        Column {
            label,
            kind,
            get,
            optional: false,
        }
    }

    pub const fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// A table: what it is called and which columns it has. Its rows follow through
/// [`Page::row`].
pub struct Table {
    pub id: &'static str,
    pub title: String,
    pub note: Option<String>,
    pub columns: Vec<Column>,
    /// Keep each row's whole JSON for its details (shown on click). Off for tables whose
    /// columns already say everything (an id map).
    pub details: bool,
}

/// A figure of the summary.
pub struct Card {
    pub label: String,
    pub value: String,
    pub tone: Tone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    /// Needs a look (skipped, needs review).
    Warn,
    /// Needs action (failed).
    Bad,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Plain => "card",
            Tone::Good => "card good",
            Tone::Warn => "card warn",
            Tone::Bad => "card bad",
        }
    }
}

/// A page being written.
pub struct Page<'w> {
    w: &'w mut dyn Write,
    nonce: String,
    buf: Vec<u8>,
    /// Rows written to the open table.
    rows: u64,
}

impl<'w> Page<'w> {
    /// Writes the head and the page's title block. `facts` are short lines under the title
    /// (organization, times, version).
    pub fn start(
        w: &'w mut dyn Write,
        kind: &str,
        title: &str,
        facts: &[String],
    ) -> io::Result<Self> {
        // Only the page's own script runs: a nonce data cannot know, on top of the escaping.
        let nonce = format!("{:032x}", rand::random::<u128>());
        write!(
            w,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; img-src 'none'; \
             base-uri 'none'; form-action 'none'\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"generator\" content=\"devrev-merge {}\">\n<title>",
            env!("CARGO_PKG_VERSION")
        )?;
        write_text(w, title)?;
        write!(
            w,
            "</title>\n<style>{CSS}</style>\n</head>\n<body data-kind=\""
        )?;
        write_text(w, kind)?;
        w.write_all(b"\">\n<header>\n<h1>")?;
        write_text(w, title)?;
        w.write_all(b"</h1>\n")?;
        for f in facts {
            w.write_all(b"<p class=\"fact\">")?;
            write_text(w, f)?;
            w.write_all(b"</p>\n")?;
        }
        w.write_all(
            b"<noscript><p class=\"warn-box\">The tables need JavaScript to show their rows; \
              the JSON report next to this file holds the same data.</p></noscript>\n\
              </header>\n<main>\n",
        )?;
        Ok(Page {
            w,
            nonce,
            buf: Vec::with_capacity(4096),
            rows: 0,
        })
    }

    /// The summary figures.
    pub fn cards(&mut self, heading: &str, cards: &[Card]) -> io::Result<()> {
        let w = &mut *self.w;
        w.write_all(b"<section id=\"summary\">\n<h2>")?;
        write_text(w, heading)?;
        w.write_all(b"</h2>\n<div class=\"cards\">\n")?;
        // Only the counts that say something: a zero is left out.
        for c in cards.iter().filter(|c| c.value != "0") {
            let zero = "";
            write!(
                w,
                "<div class=\"{}{zero}\"><span class=\"n\">",
                c.tone.class()
            )?;
            write_text(w, &c.value)?;
            w.write_all(b"</span><span class=\"l\">")?;
            write_text(w, &c.label)?;
            w.write_all(b"</span></div>\n")?;
        }
        w.write_all(b"</div>\n</section>\n")
    }

    /// The page's opening sentence: what it all comes to, in the manner of `terraform plan`.
    pub fn lead(&mut self, body: &str) -> io::Result<()> {
        self.w.write_all(b"<p class=\"lead\" id=\"lead\">")?;
        write_text(self.w, body)?;
        self.w.write_all(b"</p>\n")
    }

    /// A section of points, each with the exact command that deals with it (if any), shown
    /// as a line to copy.
    pub fn points(
        &mut self,
        id: &str,
        heading: &str,
        tone: Tone,
        items: &[(String, Option<String>)],
    ) -> io::Result<()> {
        let w = &mut *self.w;
        write!(
            w,
            "<section class=\"points {}\" id=\"{}\">\n<h2>",
            match tone {
                Tone::Bad => "bad",
                Tone::Warn => "warn",
                Tone::Good => "good",
                Tone::Plain => "plain",
            },
            text(id)
        )?;
        write_text(w, heading)?;
        w.write_all(b"</h2>\n<ul>\n")?;
        for (point, cmd) in items {
            w.write_all(b"<li>")?;
            write_text(w, point)?;
            if let Some(c) = cmd {
                w.write_all(b"<pre class=\"cmd\">")?;
                write_text(w, c)?;
                w.write_all(b"</pre>")?;
            }
            w.write_all(b"</li>\n")?;
        }
        w.write_all(b"</ul>\n</section>\n")
    }

    /// A list of links to files next to this page (`href` relative), each with a line of
    /// text.
    pub fn link_table(
        &mut self,
        id: &str,
        heading: &str,
        head: &[&str],
        rows: &[(Vec<String>, Option<String>)],
    ) -> io::Result<()> {
        let w = &mut *self.w;
        write!(w, "<section class=\"plain-tbl\" id=\"{}\">\n<h2>", text(id))?;
        write_text(w, heading)?;
        writeln!(w, " <small>({})</small></h2>", rows.len())?;
        w.write_all(b"<table class=\"list\"><thead><tr>")?;
        for h in head {
            w.write_all(b"<th>")?;
            write_text(w, h)?;
            w.write_all(b"</th>")?;
        }
        w.write_all(b"</tr></thead><tbody>\n")?;
        for (cells, href) in rows {
            w.write_all(b"<tr>")?;
            for (i, c) in cells.iter().enumerate() {
                w.write_all(b"<td>")?;
                match href.as_deref().filter(|_| i == cells.len() - 1) {
                    Some(h) => {
                        write!(w, "<a href=\"{}\">", text(h))?;
                        write_text(w, c)?;
                        w.write_all(b"</a>")?;
                    }
                    None => write_text(w, c)?,
                }
                w.write_all(b"</td>")?;
            }
            w.write_all(b"</tr>\n")?;
        }
        w.write_all(b"</tbody></table>\n</section>\n")
    }

    /// The sign-off block: who prepared the plan and when (filled in), who approves it and
    /// on which date (lines to sign on, on screen and on paper).
    pub fn signoff(&mut self, prepared_by: &str, prepared_at: &str) -> io::Result<()> {
        let w = &mut *self.w;
        w.write_all(
            b"<section id=\"sign-off\" class=\"signoff\">\n<h2>Sign-off</h2>\n\
              <table class=\"sign\"><tr><th>Prepared by</th><td>",
        )?;
        write_text(w, prepared_by)?;
        w.write_all(b"</td><th>On</th><td>")?;
        write_text(w, prepared_at)?;
        w.write_all(
            b"</td></tr>\n<tr><th>Approved by</th><td class=\"blank\"></td><th>Date</th>\
              <td class=\"blank\"></td></tr>\n<tr><th>Signature</th>\
              <td class=\"blank\" colspan=\"3\"></td></tr></table>\n\
              <p class=\"note\">Approving this plan approves what it lists: a run merges the \
              pairs and decided groups above, nothing else. Every merge is backed up first and \
              can be undone with --restore.</p>\n</section>\n",
        )
    }

    /// A paragraph of text (escaped).
    pub fn para(&mut self, class: &str, body: &str) -> io::Result<()> {
        write!(self.w, "<p class=\"{}\">", text(class))?;
        write_text(self.w, body)?;
        self.w.write_all(b"</p>\n")
    }

    /// A section showing `value` as nested key/value tables.
    pub fn kv_section(&mut self, id: &str, heading: &str, value: &Value) -> io::Result<()> {
        let w = &mut *self.w;
        write!(w, "<section class=\"kv\" id=\"{}\">\n<h2>", text(id))?;
        write_text(w, heading)?;
        w.write_all(b"</h2>\n")?;
        kv(w, value)?;
        w.write_all(b"\n</section>\n")
    }

    /// Opens `t`: its controls, its header row, and the start of its rows.
    pub fn begin_table(&mut self, t: &Table, total: usize) -> io::Result<()> {
        self.begin(t, total, false)
    }

    /// Opens `t` shown as compact cards, one per row (a pair, a group): the first column is
    /// the card's heading, the status a badge beside it, every other column with a value a
    /// labelled line. [`CARD_PAGE_SIZE`] cards a page; the labels sort.
    pub fn begin_cards(&mut self, t: &Table, total: usize) -> io::Result<()> {
        self.begin(t, total, true)
    }

    fn begin(&mut self, t: &Table, total: usize, cards: bool) -> io::Result<()> {
        let w = &mut *self.w;
        let size = if cards { CARD_PAGE_SIZE } else { PAGE_SIZE };
        let status = t.columns.iter().position(|c| c.kind == Kind::Status);
        write!(
            w,
            "<section class=\"tbl{}\" id=\"{}\" data-total=\"{total}\" data-page-size=\"{size}\"",
            if cards { " as-cards" } else { "" },
            text(t.id)
        )?;
        if let Some(i) = status {
            write!(w, " data-status=\"{i}\"")?;
        }
        w.write_all(b">\n<h2>")?;
        write_text(w, &t.title)?;
        writeln!(w, " <small>({total})</small></h2>")?;
        if let Some(n) = &t.note {
            w.write_all(b"<p class=\"note\">")?;
            write_text(w, n)?;
            w.write_all(b"</p>\n")?;
        }
        w.write_all(
            b"<div class=\"controls\"><input type=\"search\" class=\"q\" placeholder=\"Filter rows\" \
              aria-label=\"Filter rows\">",
        )?;
        if status.is_some() {
            w.write_all(
                b"<select class=\"st\" aria-label=\"Status\"><option value=\"\">every status\
                  </option></select>",
            )?;
        }
        w.write_all(
            b"<button type=\"button\" class=\"prev\">&#8249; Previous</button>\
              <span class=\"info\"></span>\
              <button type=\"button\" class=\"next\">Next &#8250;</button></div>\n",
        )?;
        let (open, cell, close_cell, close) = if cards {
            (
                "<div class=\"heads\"><span class=\"dim\">Sort by:</span> ",
                "span class=\"h\"",
                "</span> ",
                "</div>\n<div class=\"cardlist\"></div>\n",
            )
        } else {
            (
                "<div class=\"wrap\"><table><thead><tr>",
                "th",
                "</th>",
                "</tr></thead><tbody></tbody></table></div>\n",
            )
        };
        w.write_all(open.as_bytes())?;
        for (i, c) in t.columns.iter().enumerate() {
            write!(
                w,
                "<{cell} data-i=\"{i}\" data-t=\"{}\"{} tabindex=\"0\">",
                match c.kind {
                    Kind::Num => "num",
                    Kind::Long => "long",
                    Kind::Text | Kind::Status => "text",
                },
                if c.optional { " data-opt=\"1\"" } else { "" }
            )?;
            write_text(w, c.label)?;
            w.write_all(close_cell.as_bytes())?;
        }
        w.write_all(close.as_bytes())?;
        w.write_all(b"<script type=\"application/json\" class=\"rows\">[")?;
        self.rows = 0;
        Ok(())
    }

    /// One row of the open table `t`: its cells, then (with `t.details`) the whole row.
    pub fn row(&mut self, t: &Table, row: &Value) -> io::Result<()> {
        let mut cells: Vec<Value> = t.columns.iter().map(|c| (c.get)(row)).collect();
        cells.push(if t.details { row.clone() } else { Value::Null });
        self.w
            .write_all(if self.rows == 0 { b"\n" } else { b",\n" })?;
        write_script_json(self.w, &cells, &mut self.buf)?;
        self.rows += 1;
        Ok(())
    }

    /// Closes the open table.
    pub fn end_table(&mut self) -> io::Result<()> {
        self.w.write_all(b"\n]</script>\n</section>\n")
    }

    /// Writes the script and closes the page.
    pub fn finish(self) -> io::Result<()> {
        write!(
            self.w,
            "</main>\n<footer>Written by devrev-merge {}. Self-contained: no network access. \
             Click a header to sort, a row for its details.</footer>\n\
             <script nonce=\"{}\">{JS}</script>\n</body>\n</html>\n",
            env!("CARGO_PKG_VERSION"),
            self.nonce
        )?;
        self.w.flush()
    }
}

/// A label from a JSON key (`tickets_backed_up` → "tickets backed up"); a key that is words
/// already (it has a space: "… your app created (user_) …") is kept as it is.
pub fn label(key: &str) -> String {
    if key.contains(' ') {
        key.to_string()
    } else {
        key.replace('_', " ")
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("\u{2014}".into()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Most rows of a list shown inside a key/value section (the JSON has them all).
const KV_ROWS: usize = 500;

/// `v` as HTML: scalars as text, objects as key/value tables, lists of objects as tables.
fn kv(w: &mut dyn Write, v: &Value) -> io::Result<()> {
    if let Some(s) = scalar(v) {
        return write_text(w, &s);
    }
    match v {
        Value::Array(items) if items.is_empty() => w.write_all(b"<span class=\"dim\">none</span>"),
        Value::Array(items) if items.iter().all(|i| scalar(i).is_some()) => {
            let joined: Vec<String> = items.iter().filter_map(scalar).collect();
            write_text(w, &joined.join(", "))
        }
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let rows: Vec<(Option<&str>, &Map<String, Value>)> = items
                .iter()
                .filter_map(|i| i.as_object().map(|o| (None, o)))
                .collect();
            matrix(w, None, &rows)
        }
        Value::Object(m) if !m.is_empty() && m.values().all(flat_object) => {
            let rows: Vec<(Option<&str>, &Map<String, Value>)> = m
                .iter()
                .filter_map(|(k, v)| v.as_object().map(|o| (Some(k.as_str()), o)))
                .collect();
            matrix(w, Some(""), &rows)
        }
        Value::Object(m) if m.is_empty() => w.write_all(b"<span class=\"dim\">none</span>"),
        Value::Object(m) => {
            w.write_all(b"<table class=\"kv\">")?;
            for (k, v) in m {
                w.write_all(b"<tr><th>")?;
                write_text(w, &label(k))?;
                w.write_all(b"</th><td>")?;
                kv(w, v)?;
                w.write_all(b"</td></tr>")?;
            }
            w.write_all(b"</table>")
        }
        other => {
            // A list mixing kinds: shown as JSON text.
            w.write_all(b"<pre>")?;
            write_text(
                w,
                &serde_json::to_string_pretty(other).map_err(io::Error::other)?,
            )?;
            w.write_all(b"</pre>")
        }
    }
}

/// An object whose values are all scalars (a row of a matrix).
fn flat_object(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.values().all(|x| scalar(x).is_some()))
}

/// Rows of objects as one table, the columns being every key in order of appearance.
/// `first` names a leading column holding each row's own key.
fn matrix(
    w: &mut dyn Write,
    first: Option<&str>,
    rows: &[(Option<&str>, &Map<String, Value>)],
) -> io::Result<()> {
    let mut keys: Vec<&str> = Vec::new();
    for (_, o) in rows.iter().take(KV_ROWS) {
        for k in o.keys() {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    w.write_all(b"<table class=\"grid\"><thead><tr>")?;
    if let Some(f) = first {
        w.write_all(b"<th>")?;
        write_text(w, f)?;
        w.write_all(b"</th>")?;
    }
    for k in &keys {
        w.write_all(b"<th>")?;
        write_text(w, &label(k))?;
        w.write_all(b"</th>")?;
    }
    w.write_all(b"</tr></thead><tbody>")?;
    for (name, o) in rows.iter().take(KV_ROWS) {
        w.write_all(b"<tr>")?;
        if first.is_some() {
            w.write_all(b"<th>")?;
            write_text(w, name.unwrap_or_default())?;
            w.write_all(b"</th>")?;
        }
        for k in &keys {
            w.write_all(b"<td>")?;
            match o.get(*k) {
                Some(v) => kv(w, v)?,
                None => w.write_all(b"<span class=\"dim\">\xE2\x80\x94</span>")?,
            }
            w.write_all(b"</td>")?;
        }
        w.write_all(b"</tr>")?;
    }
    w.write_all(b"</tbody></table>")?;
    if rows.len() > KV_ROWS {
        write!(
            w,
            "<p class=\"note\">{} more in the JSON report.</p>",
            rows.len() - KV_ROWS
        )?;
    }
    Ok(())
}

const CSS: &str = r#"
:root{--fg:#1d232b;--dim:#5f6b7a;--line:#d8dee6;--bg:#fff;--head:#f3f5f8;--good:#1f7a3f;--goodbg:#e6f4ea;--warn:#8a5a00;--warnbg:#fff4d6;--bad:#b3261e;--badbg:#fde8e6;--info:#1a56a8;--infobg:#e7effb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 24px 10px;border-bottom:1px solid var(--line);background:var(--head)}
h1{font-size:20px;margin:0 0 6px}
h2{font-size:16px;margin:22px 0 8px}
h2 small{color:var(--dim);font-weight:normal}
main{padding:0 24px 24px}
footer{padding:12px 24px;color:var(--dim);font-size:12px;border-top:1px solid var(--line)}
.fact{margin:2px 0;color:var(--dim)}
.note{color:var(--dim);margin:4px 0 8px}
.dim{color:var(--dim)}
.warn-box{background:var(--warnbg);color:var(--warn);padding:8px 12px;border-radius:6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px;background:#fff}
.card .n{display:block;font-size:22px;font-weight:600}
.card .l{display:block;color:var(--dim);font-size:12px}
.card.zero{opacity:.6}
.card.good{border-color:var(--good);background:var(--goodbg)}
.card.warn{border-color:#e0b44c;background:var(--warnbg)}
.card.bad{border-color:var(--bad);background:var(--badbg)}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:6px 0}
.controls input{padding:5px 8px;min-width:240px;border:1px solid var(--line);border-radius:5px}
.controls select,.controls button{padding:4px 8px;border:1px solid var(--line);border-radius:5px;background:#fff}
.controls button:disabled{opacity:.4}
.info{color:var(--dim)}
.wrap{overflow-x:auto;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
.tbl td{overflow-wrap:anywhere}
.tbl td.long{white-space:pre-line;min-width:12em;max-width:40em}
.lead{font-size:17px;font-weight:600;margin:14px 0 6px;max-width:70em}
.heads{margin:4px 0 6px;font-size:12px}
.heads .h{cursor:pointer;border:1px solid var(--line);border-radius:4px;padding:1px 6px;margin-right:4px;white-space:nowrap}
.heads .h[aria-sort=ascending]::after{content:" \25B2";font-size:9px}
.heads .h[aria-sort=descending]::after{content:" \25BC";font-size:9px}
.cardlist{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:10px;align-items:start}
.pc{border:1px solid var(--line);border-radius:8px;padding:8px 12px;background:#fff;min-width:0}
.pc h3{font-size:14px;margin:0 0 4px;display:flex;justify-content:space-between;gap:8px;overflow-wrap:anywhere}
.pc h3 .st{font-size:12px;white-space:nowrap}
.pc .f{display:grid;grid-template-columns:10em minmax(0,1fr);gap:8px;padding:1px 0;border-top:1px dotted var(--line)}
.pc .k{color:var(--dim);font-size:12px}
.pc .v{white-space:pre-line;overflow-wrap:anywhere}
.pc .f.conflict .v,.pc .f.lost .v{color:var(--warn);font-weight:600}
.pc pre{white-space:pre-wrap;font-size:11px;background:#fafbfc}
.pc.has-det{cursor:pointer}
.points ul{margin:4px 0;padding-left:20px}
.points li{margin:4px 0}
.points.bad h2{color:var(--bad)}
.points.warn h2{color:var(--warn)}
pre.cmd{background:var(--head);border:1px solid var(--line);border-radius:4px;padding:4px 8px;margin:4px 0;white-space:pre-wrap;overflow-wrap:anywhere}
table.sign{width:auto;margin:6px 0}
table.sign th{color:var(--dim);font-weight:normal;width:8em}
table.sign td{min-width:16em}
table.sign td.blank{border-bottom:1px solid var(--fg);height:2.4em}
table.list td,table.list th{overflow-wrap:anywhere}
table.list th{background:var(--head)}
td pre,table.kv td{overflow-wrap:anywhere}
.tbl thead th{background:var(--head);cursor:pointer;white-space:nowrap;user-select:none;position:sticky;top:0}
.tbl thead th[aria-sort=ascending]::after{content:" \25B2";font-size:10px}
.tbl thead th[aria-sort=descending]::after{content:" \25BC";font-size:10px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.has-det{cursor:pointer}
tr.has-det:hover td{background:#f7f9fc}
tr.det td{background:#fafbfc}
tr.det pre{margin:0;white-space:pre-wrap;font-size:12px}
td.st{font-weight:600;white-space:nowrap}
.st-merged,.st-restored,.st-passed,.st-already_merged,.st-restored_earlier,.st-merge{color:var(--good)}
.st-skipped,.st-not_merged,.st-left_csv,.st-refused,.st-not_dup,.st-stale,.st-undecided{color:var(--warn)}
.st-failed,.st-error,.st-stopped,.st-merged_elsewhere{color:var(--bad)}
.st-unconfirmed,.st-interrupted,.st-not_started,.st-in_progress{color:var(--info)}
table.kv{width:auto;min-width:50%}
table.kv>tbody>tr>th,table.kv>tr>th{width:220px;color:var(--dim);font-weight:normal}
table.grid{width:auto}
table.grid th{background:var(--head)}
pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
@media print{
 @page{size:A4;margin:14mm 12mm}
 header{background:none}
 .heads,section.kv{display:none}
 .cardlist{display:block}
 .pc{break-inside:avoid;margin:0 0 6px}
 h2{break-after:avoid}
 #sign-off{break-inside:avoid}
 a{color:inherit;text-decoration:none}
 .controls,noscript,tr.det{display:none}
 .wrap{overflow:visible;border:none}
 .tbl thead th{position:static}
 .tbl thead{display:table-header-group}
 tr{break-inside:avoid}
 body{font-size:10px}
 .card{min-width:90px;padding:4px 8px}
 .card .n{font-size:16px}
}
"#;

const JS: &str = r#"
(function(){
'use strict';
function txt(c){if(c===null||c===undefined)return '';if(Array.isArray(c))return String(c[0]);return String(c);}
function table(sec){
 var rows=JSON.parse(sec.querySelector('script.rows').textContent);
 var size=parseInt(sec.getAttribute('data-page-size'),10)||200;
 var cards=sec.classList.contains('as-cards');
 var ths=sec.querySelectorAll(cards?'.heads .h':'thead th'),n=ths.length,types=[],labels=[],i,j;
 var st=sec.hasAttribute('data-status')?parseInt(sec.getAttribute('data-status'),10):-1;
 for(i=0;i<n;i++){types.push(ths[i].getAttribute('data-t'));labels.push(ths[i].textContent);}
 var hidden=[];
 for(j=0;j<n;j++){
  var empty=ths[j].getAttribute('data-opt')==='1';
  for(i=0;empty&&i<rows.length;i++)if(txt(rows[i][j])!=='')empty=false;
  hidden.push(empty);
  if(empty)ths[j].style.display='none';
 }
 var q=sec.querySelector('input.q'),sel=sec.querySelector('select.st'),info=sec.querySelector('.info'),
  prev=sec.querySelector('button.prev'),next=sec.querySelector('button.next'),tbody=sec.querySelector(cards?'.cardlist':'tbody');
 if(sel&&st>=0){
  var counts={};
  for(i=0;i<rows.length;i++){var k=txt(rows[i][st]);counts[k]=(counts[k]||0)+1;}
  Object.keys(counts).sort().forEach(function(k){var o=document.createElement('option');o.value=k;o.textContent=k+' ('+counts[k]+')';sel.appendChild(o);});
 }
 var order=[],view=[],page=0,sortI=-1,dir=1,hay=null;
 for(i=0;i<rows.length;i++)order.push(i);
 function put(c,el){
  if(Array.isArray(c)){
   var h=c.length>2?String(c[2]):'';
   if(/^https:\/\/[^\s]+$/.test(h)){var a=document.createElement('a');a.href=h;a.rel='noopener noreferrer';a.target='_blank';a.textContent=String(c[0]);el.appendChild(a);}
   else el.textContent=String(c[0]);
   if(c[1])el.title=String(c[1]);}
  else el.textContent=(c===null||c===undefined)?'':String(c);
 }
 function cell(r,j,td){
  put(r[j],td);
  if(types[j]==='num')td.className='num';else if(types[j]==='long')td.className='long';
  if(j===st)td.className='st st-'+td.textContent.replace(/[^A-Za-z0-9_]/g,'_');
  if(hidden[j])td.style.display='none';
 }
 function details(tr,d){
  var nx=tr.nextSibling;
  if(nx&&nx.className==='det'){nx.parentNode.removeChild(nx);return;}
  var dt=document.createElement('tr');dt.className='det';
  var td=document.createElement('td');td.colSpan=n;
  var pre=document.createElement('pre');pre.textContent=JSON.stringify(d,null,2);
  td.appendChild(pre);dt.appendChild(td);tr.parentNode.insertBefore(dt,tr.nextSibling);
 }
 function cardEl(r){
  var art=document.createElement('article');art.className='pc';
  var h=document.createElement('h3'),t=document.createElement('span');put(r[0],t);h.appendChild(t);
  if(st>0){var b=document.createElement('span');b.textContent=txt(r[st]);b.className='st st-'+b.textContent.replace(/[^A-Za-z0-9_]/g,'_');h.appendChild(b);}
  art.appendChild(h);
  for(var j=1;j<n;j++){
   if(j===st||txt(r[j])==='')continue;
   var f=document.createElement('div');f.className='f';
   var lb=labels[j].toLowerCase();
   if(lb.indexOf('conflict')>=0)f.className='f conflict';else if(lb.indexOf('no longer')>=0)f.className='f lost';
   var k=document.createElement('span');k.className='k';k.textContent=labels[j];
   var v=document.createElement('span');v.className='v';put(r[j],v);
   f.appendChild(k);f.appendChild(v);art.appendChild(f);
  }
  var d=r[n];
  if(d!==null&&d!==undefined){
   art.className='pc has-det';art.tabIndex=0;
   var tog=function(e){if(e.target&&e.target.tagName==='A')return;var x=art.querySelector('pre');if(x){art.removeChild(x);return;}var p=document.createElement('pre');p.textContent=JSON.stringify(d,null,2);art.appendChild(p);};
   art.addEventListener('click',tog);
   art.addEventListener('keydown',function(e){if(e.key==='Enter')tog(e);});
  }
  return art;
 }
 function rowEl(r){
  if(cards)return cardEl(r);
  var tr=document.createElement('tr');
  for(var j=0;j<n;j++){var td=document.createElement('td');cell(r,j,td);tr.appendChild(td);}
  var d=r[n];
  if(d!==null&&d!==undefined){
   tr.className='has-det';tr.tabIndex=0;
   tr.addEventListener('click',function(){details(tr,d);});
   tr.addEventListener('keydown',function(e){if(e.key==='Enter')details(tr,d);});
  }
  return tr;
 }
 function render(all){
  var start=all?0:page*size,end=all?view.length:Math.min(view.length,start+size);
  var frag=document.createDocumentFragment();
  for(var k=start;k<end;k++)frag.appendChild(rowEl(rows[view[k]]));
  tbody.textContent='';tbody.appendChild(frag);
  var pages=Math.max(1,Math.ceil(view.length/size));
  info.textContent=(view.length?('rows '+(start+1)+'\u2013'+end+' of '+view.length):'no rows')+
   (view.length<rows.length?' (filtered from '+rows.length+')':'')+(all?'':' \u00b7 page '+(page+1)+' of '+pages);
  prev.disabled=all||page===0;next.disabled=all||end>=view.length;
  sec.setAttribute('data-page',String(page+1));sec.setAttribute('data-pages',String(pages));
  sec.setAttribute('data-shown',String(end-start));
 }
 function apply(){
  var needle=q.value.trim().toLowerCase(),want=sel&&st>=0?sel.value:'';
  if(needle&&!hay){hay=[];for(var h=0;h<rows.length;h++){var p=[];for(var c=0;c<n;c++)p.push(txt(rows[h][c]));hay.push(p.join('\u0001').toLowerCase());}}
  view=[];
  for(var k=0;k<order.length;k++){var r=order[k];
   if(want&&txt(rows[r][st])!==want)continue;
   if(needle&&hay[r].indexOf(needle)<0)continue;
   view.push(r);}
  page=0;render(false);
 }
 function sortBy(c){
  if(sortI===c)dir=-dir;else{sortI=c;dir=1;}
  var num=types[c]==='num',key=[];
  for(var k=0;k<rows.length;k++){var v=txt(rows[k][c]);key.push(num?(v===''?null:parseFloat(v)):v.toLowerCase());}
  order.sort(function(a,b){var x=key[a],y=key[b],r=0;
   if(x===null||y===null)r=(x===null)-(y===null);
   else r=x<y?-dir:x>y?dir:0;
   return r||a-b;});
  for(var t=0;t<n;t++)ths[t].removeAttribute('aria-sort');
  ths[c].setAttribute('aria-sort',dir>0?'ascending':'descending');
  apply();
 }
 for(i=0;i<n;i++)(function(c){
  ths[c].addEventListener('click',function(){sortBy(c);});
  ths[c].addEventListener('keydown',function(e){if(e.key==='Enter')sortBy(c);});
 })(i);
 var timer=null;
 q.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,120);});
 if(sel)sel.addEventListener('change',apply);
 prev.addEventListener('click',function(){if(page>0){page--;render(false);}});
 next.addEventListener('click',function(){if((page+1)*size<view.length){page++;render(false);}});
 apply();
 return {all:function(){render(true);},paged:function(){render(false);}};
}
var tables=[],failed=0;
var secs=document.querySelectorAll('section.tbl');
for(var s=0;s<secs.length;s++){
 try{tables.push(table(secs[s]));}
 catch(e){failed++;secs[s].setAttribute('data-error',String(e));}
}
function printAll(){tables.forEach(function(t){t.all();});}
function paged(){tables.forEach(function(t){t.paged();});}
window.addEventListener('beforeprint',printAll);
window.addEventListener('afterprint',paged);
if(window.matchMedia){var m=window.matchMedia('print');if(m.addEventListener)m.addEventListener('change',function(e){if(e.matches)printAll();else paged();});}
// What a test (or a curious reader) can check: is any part of the page wider than the window?
function wide(){var out=[],vw=document.documentElement.clientWidth;
 var els=document.querySelectorAll('section,.wrap,header,footer');
 for(var i=0;i<els.length;i++){var e=els[i];if(e.scrollWidth>e.clientWidth+1||e.getBoundingClientRect().right>vw+1)out.push(e.id||e.className||e.tagName);}
 if(document.documentElement.scrollWidth>vw+1)out.push('document');
 return out;}
document.body.setAttribute('data-viewport',String(document.documentElement.clientWidth));
document.body.setAttribute('data-overflow',wide().join(' '));
var cl=document.querySelector('.cardlist');
if(cl&&cl.children.length){var top0=cl.children[0].offsetTop,cols=0;for(var c=0;c<cl.children.length&&cl.children[c].offsetTop===top0;c++)cols++;document.body.setAttribute('data-card-columns',String(cols));}
document.body.setAttribute('data-ready',failed?'error':String(tables.length));
})();
"#;
