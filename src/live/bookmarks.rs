//! `POST <base_url>/bookmarks`: Netscape bookmark files (what Chrome and Firefox export),
//! parsed here and merged into the profile's `Default/Bookmarks` after the browser stopped and
//! before the save (Chromium has no DevTools API for bookmarks, and it rewrites the file
//! itself while it runs). Bookmarks are appended to the bookmarks bar, folders kept.

use std::path::Path;

use serde_json::{json, Value};

/// A parsed bookmark tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A link.
    Url {
        /// Title.
        name: String,
        /// http(s) URL.
        url: String,
    },
    /// A folder.
    Folder {
        /// Title.
        name: String,
        /// Contents.
        children: Vec<Node>,
    },
}

/// Most bookmarks one upload may hold, and a session may have waiting for its save.
pub const MAX_NODES: usize = 10_000;

/// Links and folders in `nodes`, all levels.
pub fn count(nodes: &[Node]) -> usize {
    nodes
        .iter()
        .map(|n| match n {
            Node::Url { .. } => 1,
            Node::Folder { children, .. } => 1 + count(children),
        })
        .sum()
}
/// The largest Bookmarks file a merge reads (Chromium's own are far smaller).
const MAX_FILE_BYTES: u64 = 64 << 20;

fn decode_entities(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    let (q, rest) = match rest.chars().next()? {
        c @ ('"' | '\'') => (c, &rest[1..]),
        _ => (' ', rest),
    };
    let end = rest
        .find(|c: char| c == q || (q == ' ' && c == '>'))
        .unwrap_or(rest.len());
    Some(decode_entities(&rest[..end]))
}

/// Parses a Netscape bookmark file. Only http(s) links are kept.
///
/// # Errors
/// Not a bookmark file, or more than [`MAX_NODES`] entries.
pub fn parse(html: &str) -> Result<Vec<Node>, String> {
    if !html.to_ascii_uppercase().contains("<DL") {
        return Err("not a Netscape bookmark file (no <DL> list)".into());
    }
    // A stack of open folders; the bottom one is the result.
    let mut stack: Vec<(String, Vec<Node>)> = vec![(String::new(), Vec::new())];
    let mut pending_folder: Option<String> = None;
    let mut count = 0;
    let mut seen_root = false;
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt..];
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[1..gt];
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '>')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let after = &rest[gt + 1..];
        match name.as_str() {
            "H3" => {
                // A title ends where the next tag starts (a `<` in it is `&lt;`): no search
                // to the end of the file for each entry.
                let end = after.find('<').unwrap_or(after.len());
                pending_folder = Some(decode_entities(&after[..end]));
            }
            "DL" => {
                // The top-level <DL> has no heading; it is the root already.
                if let Some(f) = pending_folder.take() {
                    stack.push((f, Vec::new()));
                } else if seen_root {
                    stack.push((String::new(), Vec::new()));
                }
                seen_root = true;
            }
            "/DL" if stack.len() > 1 => {
                let (name, children) = stack.pop().expect("non-empty");
                stack
                    .last_mut()
                    .expect("root")
                    .1
                    .push(Node::Folder { name, children });
            }
            "A" => {
                let end = after.find('<').unwrap_or(after.len());
                if let Some(url) = attr(tag, "href") {
                    if (url.starts_with("http://") || url.starts_with("https://"))
                        && url.len() <= 8192
                        && !url.chars().any(char::is_control)
                    {
                        let mut name = decode_entities(&after[..end]);
                        if name.is_empty() {
                            name = url.clone();
                        }
                        stack
                            .last_mut()
                            .expect("root")
                            .1
                            .push(Node::Url { name, url });
                    }
                }
            }
            _ => {}
        }
        count += 1;
        if count > MAX_NODES * 4 {
            return Err(format!("more than {MAX_NODES} bookmarks"));
        }
        rest = after;
    }
    while stack.len() > 1 {
        let (name, children) = stack.pop().expect("non-empty");
        stack
            .last_mut()
            .expect("root")
            .1
            .push(Node::Folder { name, children });
    }
    Ok(stack.pop().expect("root").1)
}

fn webkit_now() -> String {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (us + 11_644_473_600_000_000).to_string()
}

fn max_id(v: &Value) -> u64 {
    let own = v["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    let kids = v["children"]
        .as_array()
        .map_or(0, |c| c.iter().map(max_id).max().unwrap_or(0));
    let roots = v["roots"]
        .as_object()
        .map_or(0, |r| r.values().map(max_id).max().unwrap_or(0));
    own.max(kids).max(roots)
}

fn to_json(n: &Node, next: &mut u64, now: &str) -> Value {
    *next += 1;
    let id = next.to_string();
    let guid = uuid::Uuid::new_v4().to_string();
    match n {
        Node::Url { name, url } => {
            json!({"date_added": now, "guid": guid, "id": id, "name": name, "type": "url", "url": url})
        }
        Node::Folder { name, children } => {
            let kids: Vec<Value> = children.iter().map(|c| to_json(c, next, now)).collect();
            json!({"children": kids, "date_added": now, "date_modified": now, "guid": guid, "id": id, "name": name, "type": "folder"})
        }
    }
}

/// Appends `nodes` to the bookmarks bar of the profile at `user_data_dir` (its `Default`
/// profile), creating the file if the profile has none. The browser must be stopped. The
/// browser wrote that directory: a `Default` or `Bookmarks` that is a link (or not a
/// directory, not a regular file) is refused, never followed.
///
/// # Errors
/// I/O, a link or special file where the profile or the file should be, or a Bookmarks
/// file that is not a JSON object (or larger than 64 MiB).
pub fn merge_into(user_data_dir: &Path, nodes: &[Node]) -> std::io::Result<usize> {
    if nodes.is_empty() {
        return Ok(0);
    }
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let dir = user_data_dir.join("Default");
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => return Err(invalid("Default is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(&dir)?;
        }
        Err(e) => return Err(e),
    }
    let tree = crate::profile::untrusted::Tree::open(user_data_dir)?.dir(Path::new("Default"))?;
    let mut doc: Value = match tree.read(Path::new("Bookmarks"), MAX_FILE_BYTES) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({"roots": {}, "version": 1}),
        Err(e) => return Err(e),
    };
    // Indexing a JSON value that is not an object panics: the shape is checked first.
    if !doc.is_object() {
        return Err(invalid("Bookmarks is not a JSON object"));
    }
    if !doc["roots"].is_object() {
        doc["roots"] = json!({});
    }
    let path = dir.join("Bookmarks");
    let now = webkit_now();
    let mut next = max_id(&doc).max(3);
    for (root, id, name) in [
        ("bookmark_bar", "1", "Bookmarks bar"),
        ("other", "2", "Other bookmarks"),
        ("synced", "3", "Mobile bookmarks"),
    ] {
        if !doc["roots"][root].is_object() {
            doc["roots"][root] = json!({"children": [], "date_added": now, "date_modified": "0", "guid": uuid::Uuid::new_v4().to_string(), "id": id, "name": name, "type": "folder"});
        }
    }
    let added: Vec<Value> = nodes.iter().map(|n| to_json(n, &mut next, &now)).collect();
    let n = added.len();
    match doc["roots"]["bookmark_bar"]["children"].as_array_mut() {
        Some(c) => c.extend(added),
        None => doc["roots"]["bookmark_bar"]["children"] = Value::Array(added),
    }
    // The checksum covers the old contents; Chromium accepts a file without one.
    if let Some(o) = doc.as_object_mut() {
        o.remove("checksum");
    }
    crate::fsutil::write_private_atomic(&path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"<!DOCTYPE NETSCAPE-Bookmark-file-1>
<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=UTF-8">
<TITLE>Bookmarks</TITLE><H1>Bookmarks</H1>
<DL><p>
  <DT><A HREF="https://example.com/a?x=1&amp;y=2" ADD_DATE="1">Example &amp; co</A>
  <DT><H3 ADD_DATE="1">Work</H3>
  <DL><p>
    <DT><A HREF="http://intranet.test/">Intranet</A>
    <DT><A HREF="javascript:alert(1)">Bad</A>
  </DL><p>
</DL><p>"#;

    #[test]
    fn parses_and_merges() {
        let nodes = parse(FILE).unwrap();
        assert_eq!(
            nodes,
            vec![
                Node::Url {
                    name: "Example & co".into(),
                    url: "https://example.com/a?x=1&y=2".into()
                },
                Node::Folder {
                    name: "Work".into(),
                    children: vec![Node::Url {
                        name: "Intranet".into(),
                        url: "http://intranet.test/".into()
                    }]
                },
            ]
        );
        assert!(parse("hello").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(merge_into(dir.path(), &nodes).unwrap(), 2);
        assert_eq!(merge_into(dir.path(), &nodes[..1]).unwrap(), 1);
        let doc: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("Default/Bookmarks")).unwrap())
                .unwrap();
        let bar = doc["roots"]["bookmark_bar"]["children"].as_array().unwrap();
        assert_eq!(bar.len(), 3);
        assert_eq!(bar[1]["children"][0]["url"], "http://intranet.test/");
        let ids: std::collections::BTreeSet<&str> =
            bar.iter().map(|b| b["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 3, "ids are unique");
        assert_eq!(count(&nodes), 3, "a link, a folder and the link in it");
        // A title ends at the next tag, closed or not (no search to the end of the file for
        // each entry: that made a file of unclosed entries quadratic).
        let unclosed = parse(r#"<DL><DT><H3>Folder<DL><DT><A HREF="https://a.test/">A<DT><A HREF="https://b.test/">B</DL>"#).unwrap();
        assert_eq!(
            unclosed,
            vec![Node::Folder {
                name: "Folder".into(),
                children: vec![
                    Node::Url {
                        name: "A".into(),
                        url: "https://a.test/".into()
                    },
                    Node::Url {
                        name: "B".into(),
                        url: "https://b.test/".into()
                    },
                ]
            }]
        );
    }

    /// What the browser left in its profile is not trusted: links are refused (the linked
    /// file and directory are left as they were), and a Bookmarks file of the wrong shape
    /// is an error, not a panic.
    #[test]
    fn links_and_odd_shapes_are_refused() {
        use std::os::unix::fs::symlink;
        let nodes = parse(FILE).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("record.json");
        std::fs::write(&target, br#"{"roots":{}}"#).unwrap();

        let p = tempfile::tempdir().unwrap();
        std::fs::create_dir(p.path().join("Default")).unwrap();
        symlink(&target, p.path().join("Default/Bookmarks")).unwrap();
        assert!(merge_into(p.path(), &nodes).is_err());

        let q = tempfile::tempdir().unwrap();
        symlink(outside.path(), q.path().join("Default")).unwrap();
        assert!(merge_into(q.path(), &nodes).is_err());

        assert_eq!(std::fs::read(&target).unwrap(), br#"{"roots":{}}"#);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);

        for shape in [
            "[1, 2]",
            r#"{"roots": 7}"#,
            r#"{"roots": {"bookmark_bar": 1}}"#,
        ] {
            let r = tempfile::tempdir().unwrap();
            std::fs::create_dir(r.path().join("Default")).unwrap();
            std::fs::write(r.path().join("Default/Bookmarks"), shape).unwrap();
            match shape {
                "[1, 2]" => assert!(merge_into(r.path(), &nodes).is_err()),
                _ => assert_eq!(merge_into(r.path(), &nodes).unwrap(), 2, "{shape}"),
            }
        }
    }
}
