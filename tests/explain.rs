//! Why a text document matched (`Index::explain`, `Model::document_token_spans`):
//! on the real MiniLM ColBERT (`models/colbert-minilm`).

use colwgpu::{Device, Document, IndexOptions, Model, SearchOptions};

#[test]
fn text_explanations_sum_to_the_score_and_point_at_the_matched_words() {
    let model = Model::open(
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/colbert-minilm"),
        Device::Cpu,
    )
    .unwrap();
    let docs = [
        Document::new(
            "eiffel",
            "The Eiffel Tower, in Paris, was finished in 1889.",
        ),
        Document::new(
            "colbert",
            "Late interaction keeps one vector per token: MaxSim.",
        ),
        Document::new("café", "Un café crème à Paris coûte cher."),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let index = model
        .index(&docs, tmp.path().join("t.index"), &IndexOptions::default())
        .unwrap();
    for query in ["when was the eiffel tower finished?", "café in paris"] {
        let hits = index
            .search_batch(
                &model,
                &[query],
                &SearchOptions {
                    exhaustive: true,
                    ..SearchOptions::new(3)
                },
            )
            .unwrap()
            .remove(0);
        let why = index.explain(&model, query, &hits).unwrap();
        for (h, e) in hits.iter().zip(&why) {
            let sum: f32 = e.matches.iter().map(|m| m.score).sum();
            assert!(
                (sum - h.score).abs() <= 1e-4 * h.score.abs().max(1.0),
                "{query} / {}: maxima sum {sum}, search score {}",
                h.id,
                h.score
            );
            assert!(e.page.is_none());
            let text = &docs.iter().find(|d| d.id == h.id).unwrap().text;
            let spans = model.document_token_spans(text).unwrap();
            assert_eq!(
                spans.len(),
                e.doc_len,
                "{}: one span per stored vector",
                h.id
            );
        }
    }
    // The top document's best matches include the words the query shares with it.
    let query = "when was the eiffel tower finished?";
    let hits = index.search(&model, query, 1).unwrap();
    let e = &index.explain(&model, query, &hits).unwrap()[0];
    assert_eq!(e.id, "eiffel");
    let text = &docs[0].text;
    let spans = model.document_token_spans(text).unwrap();
    let words: Vec<String> = e
        .matches
        .iter()
        .filter_map(|m| spans[m.doc_token])
        .map(|(a, b)| {
            text.chars()
                .skip(a)
                .take(b - a)
                .collect::<String>()
                .to_lowercase()
        })
        .collect();
    for w in ["tower", "finished", "iff"] {
        assert!(
            words.iter().any(|x| x == w),
            "{w} not among the matched words {words:?}"
        );
    }
    // Character (not byte) offsets on non-ASCII text.
    let spans = model.document_token_spans(&docs[2].text).unwrap();
    let chars: Vec<char> = docs[2].text.chars().collect();
    let got: Vec<String> = spans
        .iter()
        .flatten()
        .map(|&(a, b)| chars[a..b].iter().collect())
        .collect();
    assert!(
        got.contains(&"coûte".to_string()) || got.iter().any(|t| t.starts_with("co")),
        "{got:?}"
    );
    assert!(got.iter().any(|t| t == "Paris"), "{got:?}");
}
