//! `server.document_placement = "opener"`: documents run on the thread of the session that
//! opened them instead of document threads of their own. Editors on any worker thread see the
//! same behaviour: updates acknowledged, delivered to the others, stored.

use crate::common;

use common::{Daemon, render, text_update};
use zedi_sync::protocol::{Message, SyncMessage};

#[test]
fn documents_placed_on_the_opener_thread_sync_every_editor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__SERVER__DOCUMENT_PLACEMENT", "opener"),
            ("ZEDI__SERVER__WORKERS", "2"),
        ],
    );
    // Several editors per document over several documents, so sessions on both workers share
    // documents that live on either.
    let docs = ["placed-a", "placed-b", "placed-c"];
    let mut editors: Vec<_> = (0..6).map(|_| daemon.ws()).collect();
    for editor in &mut editors {
        for doc in docs {
            editor.open(doc);
        }
    }
    // Two readers per document that only listen (the editors' own waits for acks skip what
    // others sent, and a reader's wait skips other documents' frames).
    let mut readers: Vec<_> = docs
        .iter()
        .chain(docs.iter())
        .map(|doc| {
            let mut reader = daemon.ws();
            reader.open(doc);
            (*doc, reader)
        })
        .collect();
    for (i, editor) in editors.iter_mut().enumerate() {
        for doc in docs {
            let update = text_update(10 + i as u64, &format!("e{i} "));
            editor.send(doc, Message::Sync(SyncMessage::Update(&update)));
            editor.expect_ack(doc);
        }
    }
    let expected: Vec<Vec<u8>> = (0..6)
        .map(|i| text_update(10 + i, &format!("e{i} ")))
        .collect();
    let refs: Vec<&[u8]> = expected.iter().map(Vec::as_slice).collect();
    let want = render(&refs);
    for (doc, reader) in &mut readers {
        let got = reader.expect_text(doc, "every editor's text", |t| t.len() == want.len());
        assert_eq!(got, want);
    }
    drop((editors, readers));
    daemon.restart();
    let mut fresh = daemon.ws();
    for doc in docs {
        assert_eq!(render(&[&fresh.open(doc)]), want, "{doc} stored");
    }
}
