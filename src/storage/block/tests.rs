use super::*;

fn id(i: u32) -> TraceId {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&xxh3_64(&i.to_le_bytes()).to_be_bytes()[..4]);
    a[12..].copy_from_slice(&i.to_be_bytes());
    TraceId(a)
}

fn info() -> BlockInfo {
    BlockInfo {
        tenant: "t".into(),
        block_id: "b".into(),
        ingester: "ingester-1".into(),
        start_unix_nano: 1,
        end_unix_nano: 2,
        created_unix_secs: 3,
    }
}

fn payload(i: u32) -> Bytes {
    Bytes::from(format!("trace-{i}-").repeat(50))
}

#[test]
fn a_merges_inputs_are_not_read_once_its_output_is_listed_and_old_metas_parse() {
    let meta = |block_id: &str, sources: &[&str]| {
        let mut m = encode(
            vec![BlockTrace {
                id: id(1),
                data: payload(1),
            }],
            BlockInfo {
                block_id: block_id.into(),
                ..info()
            },
        )
        .expect("encode")
        .meta;
        m.sources = sources.iter().map(|s| (*s).to_owned()).collect();
        m
    };
    let listed = vec![
        meta("a", &[]),
        meta("b", &[]),
        meta("c", &[]),
        meta("ab", &["a", "b"]),
    ];
    let read: Vec<String> = without_replaced(listed.clone())
        .into_iter()
        .map(|m| m.block_id)
        .collect();
    assert_eq!(read, ["c", "ab"]);
    // Without the output (not uploaded yet, or its meta not written): the inputs.
    assert_eq!(without_replaced(listed[..3].to_vec()).len(), 3);
    // A meta written before `sources` existed parses, and one without sources says none.
    let json = serde_json::to_value(&listed[0]).expect("json");
    assert!(json.get("sources").is_none());
    let back: BlockMeta = serde_json::from_value(json).expect("parse");
    assert!(back.sources.is_empty());
    let json = serde_json::to_string(&listed[3]).expect("json");
    assert!(json.contains(r#""sources":["a","b"]"#), "{json}");
}

#[test]
fn every_trace_is_found_through_filter_index_and_page() {
    let traces: Vec<BlockTrace> = (0..5000)
        .map(|i| BlockTrace {
            id: id(i),
            data: payload(i),
        })
        .collect();
    let block = encode(traces, info()).expect("encode");
    assert!(block.meta.data_pages > 1, "several pages");
    assert_eq!(block.meta.total_traces, 5000);
    let filter = TraceFilter::decode(&block.filter).expect("filter");
    let index = PageIndex::decode(&block.index).expect("index");
    assert_eq!(index.traces(), 5000);
    for i in (0..5000).step_by(7) {
        assert!(filter.may_contain(&id(i)));
        let page = index.find(&id(i)).expect("page");
        let bytes = &block.data[page.offset as usize..(page.offset + page.len as u64) as usize];
        assert_eq!(
            find_in_page(bytes, &id(i)).expect("page decodes"),
            Some(payload(i))
        );
    }
    let absent = (10_000..12_000)
        .filter(|&i| filter.may_contain(&id(i)))
        .count();
    assert!(absent < 40, "{absent} false positives in 2000");
    assert_eq!(decode_all(&block.data, &index).expect("decode").len(), 5000);
}

#[test]
fn segments_of_one_trace_are_merged() {
    let traces = vec![
        BlockTrace {
            id: id(1),
            data: Bytes::from_static(b"a"),
        },
        BlockTrace {
            id: id(2),
            data: Bytes::from_static(b"x"),
        },
        BlockTrace {
            id: id(1),
            data: Bytes::from_static(b"b"),
        },
    ];
    let block = encode(traces, info()).expect("encode");
    let index = PageIndex::decode(&block.index).expect("index");
    let page = index.find(&id(1)).expect("page");
    let bytes = &block.data[page.offset as usize..(page.offset + page.len as u64) as usize];
    let found = find_in_page(bytes, &id(1))
        .expect("decodes")
        .expect("found");
    assert!(found == Bytes::from_static(b"ab") || found == Bytes::from_static(b"ba"));
    assert_eq!(block.meta.total_traces, 2);
}

#[test]
fn meta_round_trips_as_json_and_garbage_is_an_error() {
    let block = encode(
        vec![BlockTrace {
            id: id(1),
            data: payload(1),
        }],
        info(),
    )
    .expect("encode");
    let json = serde_json::to_string(&block.meta).expect("json");
    let back: BlockMeta = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, block.meta);
    assert!(PageIndex::decode(b"nope").is_err());
    assert!(TraceFilter::decode(b"\xff\xff").is_err());
    assert!(find_in_page(b"not zstd", &id(1)).is_err());
}
