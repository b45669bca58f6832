//! Route lookup time with 10 and with 10,000 routes: it must not grow with the table. Also the
//! cost of building a 10,000-route table and of editing one route in it.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gw_router::{Edit, HostPattern, PathPattern, RequestParts, RouteSpec, Router};
use http::{HeaderMap, Method};

fn table(n: usize) -> Router<usize> {
    Router::new(specs(n)).unwrap()
}

fn specs(n: usize) -> Vec<RouteSpec<usize>> {
    (0..n)
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
        .collect()
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

fn edit(c: &mut Criterion) {
    c.bench_function("build/10000_routes", |b| b.iter(|| black_box(Router::new(specs(10_000)).unwrap().len())));
    let r = table(10_000);
    let extra = specs(10_001).pop().unwrap();
    c.bench_function("edit/push_1_of_10000", |b| {
        b.iter(|| black_box(r.edit(Edit::Push(extra.clone())).unwrap().len()));
    });
    c.bench_function("edit/remove_1_of_10000", |b| b.iter(|| black_box(r.edit(Edit::Remove(5000)).unwrap().len())));
}

criterion_group!(benches, bench, edit);
criterion_main!(benches);
