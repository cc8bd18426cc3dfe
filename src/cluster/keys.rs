//! Redis key names, all under one configurable prefix so several environments can share a
//! Redis. Document names go inside `{…}` hash tags, which keeps a document's keys in one slot
//! should the Redis ever be a cluster.

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// Holder of a document's lease: the owning node's id, with a TTL.
    pub fn lease(&self, doc: &str) -> String {
        format!("{}lease:{{{doc}}}", self.prefix)
    }

    /// Monotonic fencing-token counter of a document.
    pub fn fence(&self, doc: &str) -> String {
        format!("{}fence:{{{doc}}}", self.prefix)
    }

    /// The document's update/awareness/stateless stream between nodes.
    pub fn stream(&self, doc: &str) -> String {
        format!("{}stream:{{{doc}}}", self.prefix)
    }

    /// A node's heartbeat.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}node:{node_id}", self.prefix)
    }

    /// Pattern matching every node heartbeat.
    pub fn nodes_pattern(&self) -> String {
        format!("{}node:*", self.prefix)
    }

    /// The document name back from a stream key.
    pub fn doc_of_stream<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)?
            .strip_prefix("stream:{")?
            .strip_suffix('}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_keep_the_prefix() {
        let k = Keys::new("zedi:dev:");
        assert_eq!(k.lease("a/b"), "zedi:dev:lease:{a/b}");
        assert_eq!(k.stream("a}b"), "zedi:dev:stream:{a}b}");
        assert_eq!(k.doc_of_stream(&k.stream("notes/1")), Some("notes/1"));
        assert_eq!(k.doc_of_stream(&k.stream("a}b")), Some("a}b"));
        assert_eq!(k.doc_of_stream("other:stream:{x}"), None);
    }
}
