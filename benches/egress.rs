//! Egress filter throughput (docs/BENCHMARKS.md, "Egress filter").
//!
//! The corpus is generated here, deterministically: prose, source code,
//! JSON, CSV and log lines (benign), and the same with planted secrets.
//! Before measuring, the bench prints the false-positive count on the
//! benign corpus and how many planted secrets were found.
//!
//! Run on one core: `taskset -c 1 cargo bench --bench egress`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, Bencher, BenchmarkId, Criterion, Throughput,
};
use rlm_sandbox::capture::CapturedStream;
use rlm_sandbox::egress::{
    ContextEchoIndex, EchoConfig, EgressConfig, EgressFilter, KnownSecret, Stream,
};

#[path = "../src/egress/corpus.rs"]
mod corpus;
use corpus::{csv_line, Rng, ALNUM, HEX, WORDS};

/// Ordinary English without the filter's keywords: the second benign
/// corpus (the first one is keyword-dense on purpose).
const PLAIN_WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "people",
    "time",
    "year",
    "government",
    "country",
    "market",
    "water",
    "history",
    "between",
    "development",
    "important",
    "different",
    "following",
    "information",
    "experience",
    "however",
    "including",
    "children",
    "together",
    "although",
    "research",
    "community",
    "London",
    "Monday",
    "September",
    "described",
    "remained",
    "village",
    "river",
    "school",
];

/// About `len` bytes of plain English sentences.
fn plain_english(seed: u64, len: usize) -> String {
    let mut rng = Rng(seed);
    let mut out = String::with_capacity(len + 64);
    let mut sentence_start = true;
    while out.len() < len {
        let word = rng.pick(PLAIN_WORDS);
        if sentence_start {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
        sentence_start = false;
        match rng.below(16) {
            0 => {
                out.push_str(". ");
                sentence_start = true;
            }
            1 => out.push_str(", "),
            2 => out.push_str(&format!(" in {} ", 1800 + rng.below(225))),
            3 if rng.below(8) == 0 => {
                out.push_str(".\n\n");
                sentence_start = true;
            }
            _ => out.push(' '),
        }
    }
    out
}

const IDENTS: &[&str] = &[
    "context",
    "chunk",
    "result",
    "answer",
    "i",
    "offset",
    "matches",
    "text",
    "line",
    "count",
    "tokens",
    "token_count",
    "password_hint",
    "api_key_name",
    "secret_name",
    "buffer",
    "df",
    "row",
];

fn prose(rng: &mut Rng, out: &mut String, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        out.push_str(rng.pick(WORDS));
        match rng.below(14) {
            0 => out.push_str(&format!(" {} ", rng.below(1_000_000))),
            1 => out.push_str(".\n"),
            2 => out.push_str(", "),
            _ => out.push(' '),
        }
    }
}

fn code(rng: &mut Rng, out: &mut String, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        let (a, b) = (rng.pick(IDENTS), rng.pick(IDENTS));
        let line = match rng.below(8) {
            0 => format!("for {a} in range(len({b})):\n"),
            1 => format!(
                "    {a} = {b}[{}:{}]\n",
                rng.below(10_000),
                rng.below(100_000)
            ),
            2 => format!("    if {a} == \"{}\":\n", rng.pick(WORDS)),
            3 => format!("        print(f\"{a}={{{b}}} at {{i}}\")\n"),
            4 => format!("def process_{a}_{b}(self, {a}, {b}=None):\n"),
            5 => format!(
                "    {a}.append(re.findall(r\"\\b{}\\w+\", {b}))\n",
                rng.pick(WORDS)
            ),
            6 => format!("fn {a}_{b}(x: &[u8]) -> Result<Vec<u8>, Error> {{ Ok(x.to_vec()) }}\n"),
            _ => format!(
                "    return {a} + {}  # {} {}\n",
                rng.below(100),
                rng.pick(WORDS),
                rng.pick(WORDS)
            ),
        };
        out.push_str(&line);
    }
}

fn json(rng: &mut Rng, out: &mut String, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        let id = rng.pick_from(HEX, 32);
        out.push_str(&format!(
            "{{\"id\": \"{}-{}-{}-{}-{}\", \"name\": \"{} {}\", \"score\": {}.{}, \"tokens\": {}, \"tags\": [\"{}\", \"{}\"], \"sha\": \"{}\"}}\n",
            &id[..8], &id[8..12], &id[12..16], &id[16..20], &id[20..],
            rng.pick(WORDS), rng.pick(WORDS), rng.below(100), rng.below(1000), rng.below(4096),
            rng.pick(WORDS), rng.pick(WORDS), rng.pick_from(HEX, 40)
        ));
    }
}

fn csv_and_logs(rng: &mut Rng, out: &mut String, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        if rng.below(2) == 0 {
            out.push_str(&csv_line(rng));
        } else {
            out.push_str(&format!(
                "2024-05-{:02}T{:02}:{:02}:{:02}Z INFO [worker-{}] GET /api/v1/users/{}/orders status=200 duration_ms={} sha256={}\n",
                1 + rng.below(28), rng.below(24), rng.below(60), rng.below(60), rng.below(16), rng.below(100_000), rng.below(5000), rng.pick_from(HEX, 64)
            ));
        }
    }
}

/// About `len` bytes of benign output: prose, code, JSON, CSV and logs in
/// 4 KiB blocks.
fn benign(seed: u64, len: usize) -> String {
    let mut rng = Rng(seed);
    let mut out = String::with_capacity(len + 8192);
    while out.len() < len {
        match rng.below(4) {
            0 => prose(&mut rng, &mut out, 4096),
            1 => code(&mut rng, &mut out, 4096),
            2 => json(&mut rng, &mut out, 4096),
            _ => csv_and_logs(&mut rng, &mut out, 4096),
        }
    }
    out
}

/// The benign corpus with one planted secret every ~64 KiB; returns the
/// text and the number planted.
fn with_secrets(seed: u64, len: usize) -> (String, usize) {
    let mut rng = Rng(seed);
    let base = benign(seed, len);
    let mut out = String::with_capacity(len + len / 100);
    let mut planted = 0;
    for (i, piece) in base.as_bytes().chunks(64 * 1024).enumerate() {
        out.push_str(&String::from_utf8_lossy(piece));
        let secret = match i % 8 {
            0 => format!(
                "AKIA{}",
                rng.pick_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
            ),
            1 => format!("ghp_{}", rng.pick_from(ALNUM, 36)),
            2 => format!("sk-proj-{}", rng.pick_from(ALNUM, 64)),
            3 => format!("xoxb-123456789012-{}", rng.pick_from(ALNUM, 24)),
            4 => format!("DB_PASSWORD={}", rng.pick_from(ALNUM, 14)),
            5 => format!("Authorization: Bearer {}", rng.pick_from(ALNUM, 40)),
            6 => format!("leaked {}", rng.pick_from(ALNUM, 40)),
            _ => format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
                rng.pick_from(ALNUM, 64)
            ),
        };
        out.push_str(&format!("\n{secret}\n"));
        planted += 1;
    }
    (out, planted)
}

const CORPUS: usize = 8 << 20;
const CONTEXT: usize = 100 << 20;

fn report_accuracy() {
    let filter = match EgressFilter::new(EgressConfig::default()) {
        Ok(f) => f,
        Err(e) => panic!("filter: {e}"),
    };
    let benign = benign(1, CORPUS);
    let fp = filter
        .filter_text(Stream::Stdout, benign.as_bytes())
        .findings;
    eprintln!(
        "egress: benign corpus {} bytes: {} false positives",
        benign.len(),
        fp.len()
    );
    for f in fp.iter().take(10) {
        eprintln!("  {} {:?}", f.kind, &benign[f.span[0]..f.span[1]]);
    }
    let english = plain_english(6, CORPUS);
    let fp = filter
        .filter_text(Stream::Stdout, english.as_bytes())
        .findings;
    eprintln!(
        "egress: plain English corpus {} bytes: {} false positives",
        english.len(),
        fp.len()
    );
    for f in fp.iter().take(10) {
        eprintln!("  {} {:?}", f.kind, &english[f.span[0]..f.span[1]]);
    }
    let (mixed, planted) = with_secrets(2, CORPUS);
    let found = filter
        .filter_text(Stream::Stdout, mixed.as_bytes())
        .findings;
    eprintln!(
        "egress: mixed corpus: {planted} secrets planted, {} findings",
        found.len()
    );
}

/// Filters a buffer the filter may keep, as a run's captured output is:
/// the copy made for each iteration is not timed.
fn owned(b: &mut Bencher, filter: &EgressFilter, text: &[u8]) {
    b.iter_batched(
        || text.to_vec(),
        |buf| filter.filter_bytes(Stream::Stdout, black_box(buf)),
        BatchSize::LargeInput,
    )
}

fn bench_filter(c: &mut Criterion) {
    report_accuracy();
    let mut group = c.benchmark_group("egress_filter");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let benign = benign(1, CORPUS);
    let (mixed, _) = with_secrets(2, CORPUS);
    let filter = match EgressFilter::new(EgressConfig::default()) {
        Ok(f) => f,
        Err(e) => panic!("filter: {e}"),
    };
    group.throughput(Throughput::Bytes(benign.len() as u64));
    group.bench_function("benign", |b| owned(b, &filter, benign.as_bytes()));
    let english = plain_english(6, CORPUS);
    group.throughput(Throughput::Bytes(english.len() as u64));
    group.bench_function("benign_plain_english", |b| {
        owned(b, &filter, english.as_bytes())
    });
    group.throughput(Throughput::Bytes(mixed.len() as u64));
    group.bench_function("mixed_with_secrets", |b| {
        owned(b, &filter, mixed.as_bytes())
    });
    // With two known host secrets, and as a capped capture (head + tail).
    let known = vec![
        KnownSecret::new(
            "OPENAI_API_KEY",
            b"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789".to_vec(),
        ),
        KnownSecret::new("DB_PASS", b"correct-horse-battery-staple".to_vec()),
    ];
    let known: Vec<KnownSecret> = known.into_iter().filter_map(Result::ok).collect();
    let filter_known = match EgressFilter::new(EgressConfig {
        known_secrets: known,
        ..EgressConfig::default()
    }) {
        Ok(f) => f,
        Err(e) => panic!("filter: {e}"),
    };
    group.throughput(Throughput::Bytes(benign.len() as u64));
    group.bench_function("benign_known_secrets", |b| {
        owned(b, &filter_known, benign.as_bytes())
    });
    let half = benign.len() / 2;
    let captured = CapturedStream {
        head: benign.as_bytes()[..half].to_vec(),
        tail: benign.as_bytes()[half..].to_vec(),
        dropped: 12345,
    };
    group.bench_function("benign_captured", |b| {
        b.iter_batched(
            || captured.clone(),
            |captured| filter.filter(Stream::Stderr, black_box(captured)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_echo(c: &mut Criterion) {
    let context = benign(3, CONTEXT);
    let cfg = EchoConfig::default();
    let index = ContextEchoIndex::build(context.as_bytes(), &cfg);
    eprintln!(
        "egress: context {} bytes, index {} bytes ({:.2}%), window {}",
        context.len(),
        index.index_bytes(),
        100.0 * index.index_bytes() as f64 / context.len() as f64,
        index.window()
    );
    let mut group = c.benchmark_group("egress_echo");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(context.len() as u64));
    group.bench_function(BenchmarkId::new("index_build", "100MB"), |b| {
        b.iter(|| ContextEchoIndex::build(black_box(context.as_bytes()), &cfg))
    });
    // Output: 16 MiB of other benign text with 100 KB echoes of the
    // context every MiB.
    let mut output = benign(4, 16 << 20);
    let mut rng = Rng(9);
    for _ in 0..16 {
        let at = rng.below(CONTEXT - 200_000);
        let at = (at..).find(|&i| context.is_char_boundary(i)).unwrap_or(0);
        let end = (at + 100_000..)
            .find(|&i| context.is_char_boundary(i))
            .unwrap_or(at);
        let pos = (rng.below(output.len())..)
            .find(|&i| output.is_char_boundary(i))
            .unwrap_or(0);
        output.insert_str(pos, &context[at..end]);
    }
    let report = index.check(output.as_bytes(), cfg.min_run);
    eprintln!(
        "egress: echo check: 16 planted 100 KB echoes, {} spans, {} bytes echoed",
        report.spans.len(),
        report.echoed_bytes
    );
    let clean = benign(5, 16 << 20);
    let clean_report = index.check(clean.as_bytes(), cfg.min_run);
    eprintln!(
        "egress: echo check on unrelated output: {} spans, {} bytes",
        clean_report.spans.len(),
        clean_report.echoed_bytes
    );
    group.sample_size(20);
    group.throughput(Throughput::Bytes(output.len() as u64));
    group.bench_function(BenchmarkId::new("check", "16MB_output"), |b| {
        b.iter(|| index.check(black_box(output.as_bytes()), cfg.min_run))
    });
    let filter = match EgressFilter::new(EgressConfig::default()) {
        Ok(f) => f.with_context(index.clone()),
        Err(e) => panic!("filter: {e}"),
    };
    group.throughput(Throughput::Bytes(clean.len() as u64));
    group.bench_function(
        BenchmarkId::new("full_filter_with_context", "16MB_benign"),
        |b| owned(b, &filter, clean.as_bytes()),
    );
    // A 4 KiB context, kept whole and compared with the output directly;
    // its code and JSON lines recur in the unrelated output.
    let short_context = &context[..(4096..).find(|&i| context.is_char_boundary(i)).unwrap_or(0)];
    let short = ContextEchoIndex::build(short_context.as_bytes(), &cfg);
    let filter = match EgressFilter::new(EgressConfig::default()) {
        Ok(f) => f.with_context(short),
        Err(e) => panic!("filter: {e}"),
    };
    let fp = filter
        .filter_text(Stream::Stdout, clean.as_bytes())
        .findings;
    eprintln!(
        "egress: 4 KiB context, 16 MB unrelated output: {} findings",
        fp.len()
    );
    group.bench_function(
        BenchmarkId::new("full_filter_with_short_context", "16MB_benign"),
        |b| owned(b, &filter, clean.as_bytes()),
    );
    group.finish();
}

criterion_group!(benches, bench_filter, bench_echo);
criterion_main!(benches);
