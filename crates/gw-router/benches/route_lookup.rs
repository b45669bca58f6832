//! Route lookup time with 10 and with 10,000 routes: it must not grow with the table.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gw_router::{HostPattern, PathPattern, RequestParts, RouteSpec, Router};
use http::{HeaderMap, Method};

fn table(n: usize) -> Router<usize> {
    let specs = (0..n)
        .map(|i| {
            let path = match i % 3 {
                0 => format!("/svc{i}/items"),
                1 => format!("/svc{i}/items/{{id}}"),
                _ => format!("/svc{i}/*"),
            };
            RouteSpec {
                hosts: vec![HostPattern::parse(&format!("h{}.test", i % 10)).unwrap()],
                paths: vec![PathPattern::parse(&path).unwrap()],
                methods: vec![],
                headers: vec![],
                query: vec![],
                priority: 0,
                value: i,
            }
        })
        .collect();
    Router::new(specs).unwrap()
}

fn bench(c: &mut Criterion) {
    let h = HeaderMap::new();
    for n in [10usize, 10_000] {
        let r = table(n);
        // The last template route of the table, on its host.
        let i = (0..n).rev().find(|i| i % 3 == 1).unwrap();
        let host = format!("h{}.test", i % 10);
        let path = format!("/svc{i}/items/42");
        c.bench_function(&format!("lookup/{n}_routes"), |b| {
            b.iter(|| {
                let m = r.find(&RequestParts {
                    host: black_box(&host),
                    path: black_box(&path),
                    method: &Method::GET,
                    headers: &h,
                    query: None,
                });
                black_box(m.map(|m| *m.value))
            });
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
