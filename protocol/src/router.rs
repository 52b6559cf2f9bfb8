//! The routing table: a handful of fixed patterns with `{param}` segments.
//!
//! Matching scans the distinct path patterns (there are fewer than
//! twenty), each compiled into literal runs and `{param}` segments: a
//! pattern whose length cannot fit is skipped, then literal runs compare
//! as prefixes and a param takes the bytes up to the next `/`. No
//! `str::split` (its generic searcher was a quarter of a `GET` of a sale)
//! and no allocation. A path
//! that matches a pattern but not its method yields the pattern's
//! precomputed `Allow` value for a 405.
//!
//! `HEAD` is served wherever `GET` is (RFC 9110 §9.3.2: a server SHOULD
//! answer HEAD as it would GET, without the body): a `HEAD` request finds
//! the pattern's `GET` route unless a `HEAD` route was added, and `Allow`
//! lists `HEAD` beside `GET`. The reactor leaves the body out.

use crate::request::Method;

/// Up to this many `{param}` segments per pattern.
pub const PARAMS_MAX: usize = 2;

#[derive(Debug, Clone, Copy, Default)]
pub struct Params<'p> {
    vals: [&'p str; PARAMS_MAX],
    len: usize,
}

impl<'p> Params<'p> {
    pub fn get(&self, i: usize) -> Option<&'p str> {
        (i < self.len).then(|| self.vals[i])
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug)]
pub enum RouteMatch<'p, R> {
    Found(R, Params<'p>),
    MethodNotAllowed { allow: &'static str },
    NotFound,
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(&'static str),
    Param,
}

/// What a pattern matches, in order: literal runs (slashes included) and
/// `{param}` segments.
#[derive(Debug, Clone)]
enum Piece {
    Lit(&'static str),
    Param,
}

#[derive(Debug)]
struct Pattern<R> {
    segs: Vec<Seg>,
    pieces: Vec<Piece>,
    /// Bytes of the shortest path it matches (each param one byte).
    min_len: usize,
    /// No params: only paths of exactly `min_len` bytes.
    exact: bool,
    methods: Vec<(Method, R)>,
    allow: &'static str,
}

#[derive(Debug)]
pub struct Router<R: Copy> {
    patterns: Vec<Pattern<R>>,
}

impl<R: Copy> Default for Router<R> {
    fn default() -> Self {
        Router {
            patterns: Vec::new(),
        }
    }
}

/// `pattern` as literal runs and params: `/api/v1/activities/{id}/orders`
/// is `/api/v1/activities/`, a param, `/orders`.
fn pieces(pattern: &'static str) -> Vec<Piece> {
    let mut out = Vec::new();
    let (mut lit_start, mut pos) = (0, 1);
    loop {
        let end = pattern[pos..].find('/').map_or(pattern.len(), |j| pos + j);
        let seg = &pattern[pos..end];
        if seg.starts_with('{') && seg.ends_with('}') {
            if lit_start < pos {
                out.push(Piece::Lit(&pattern[lit_start..pos]));
            }
            out.push(Piece::Param);
            lit_start = end;
        }
        if end == pattern.len() {
            break;
        }
        pos = end + 1;
    }
    if lit_start < pattern.len() {
        out.push(Piece::Lit(&pattern[lit_start..]));
    }
    out
}

impl<R: Copy> Router<R> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a route. Panics on a malformed pattern: routes are compiled in,
    /// so a bad one is a programming error caught by any test that builds
    /// the router.
    pub fn route(mut self, method: Method, pattern: &'static str, id: R) -> Self {
        assert!(
            pattern.starts_with('/'),
            "route pattern must start with '/': {pattern}"
        );
        let segs: Vec<Seg> = pattern[1..]
            .split('/')
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Seg::Param
                } else {
                    Seg::Lit(s)
                }
            })
            .collect();
        let params = segs.iter().filter(|s| matches!(s, Seg::Param)).count();
        assert!(params <= PARAMS_MAX, "too many params in {pattern}");
        let same = |p: &Pattern<R>| {
            p.segs.len() == segs.len()
                && p.segs.iter().zip(&segs).all(|(a, b)| match (a, b) {
                    (Seg::Lit(x), Seg::Lit(y)) => x == y,
                    (Seg::Param, Seg::Param) => true,
                    _ => false,
                })
        };
        let idx = match self.patterns.iter().position(same) {
            Some(i) => i,
            None => {
                let pieces = pieces(pattern);
                let min_len = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Lit(l) => l.len(),
                        Piece::Param => 1,
                    })
                    .sum();
                self.patterns.push(Pattern {
                    segs,
                    pieces,
                    min_len,
                    exact: params == 0,
                    methods: Vec::new(),
                    allow: "",
                });
                self.patterns.len() - 1
            }
        };
        let p = &mut self.patterns[idx];
        assert!(
            !p.methods.iter().any(|(m, _)| *m == method),
            "duplicate route {pattern}"
        );
        p.methods.push((method, id));
        let mut allow: Vec<&str> = p.methods.iter().map(|(m, _)| m.as_str()).collect();
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.insert(
                allow.iter().position(|m| *m == "GET").unwrap_or(0) + 1,
                "HEAD",
            );
        }
        // Leaked once per route at start-up so a 405 can borrow it forever.
        p.allow = Box::leak(allow.join(", ").into_boxed_str());
        self
    }

    pub fn find<'p>(&self, method: Method, path: &'p str) -> RouteMatch<'p, R> {
        'patterns: for p in &self.patterns {
            if path.len() < p.min_len || (p.exact && path.len() != p.min_len) {
                continue;
            }
            let mut params = Params::default();
            let mut rest = path;
            for piece in &p.pieces {
                match piece {
                    Piece::Lit(l) => match crate::bytes_eq::strip_prefix(rest, l) {
                        Some(r) => rest = r,
                        None => continue 'patterns,
                    },
                    Piece::Param => {
                        let n = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
                        if n == 0 {
                            continue 'patterns;
                        }
                        params.vals[params.len] = &rest[..n];
                        params.len += 1;
                        rest = &rest[n..];
                    }
                }
            }
            if !rest.is_empty() {
                continue;
            }
            let found = p.methods.iter().find(|(m, _)| *m == method).or_else(|| {
                (method == Method::Head)
                    .then(|| p.methods.iter().find(|(m, _)| *m == Method::Get))
                    .flatten()
            });
            return match found {
                Some((_, id)) => RouteMatch::Found(*id, params),
                None => RouteMatch::MethodNotAllowed { allow: p.allow },
            };
        }
        RouteMatch::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<u8> {
        Router::new()
            .route(Method::Get, "/healthz", 1)
            .route(Method::Get, "/api/v1/activities/{id}", 2)
            .route(Method::Post, "/api/v1/activities/{id}/orders", 3)
            .route(Method::Post, "/api/v1/activities", 4)
            .route(Method::Get, "/api/v1/orders/{id}", 5)
    }

    #[test]
    fn matches_literals_and_params() {
        let r = router();
        assert!(matches!(
            r.find(Method::Get, "/healthz"),
            RouteMatch::Found(1, _)
        ));
        match r.find(Method::Post, "/api/v1/activities/42/orders") {
            RouteMatch::Found(3, p) => assert_eq!(p.get(0), Some("42")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.find(Method::Post, "/api/v1/activities"),
            RouteMatch::Found(4, _)
        ));
    }

    #[test]
    fn not_found_and_method_not_allowed() {
        let r = router();
        assert!(matches!(r.find(Method::Get, "/nope"), RouteMatch::NotFound));
        assert!(matches!(
            r.find(Method::Get, "/api/v1/activities//orders"),
            RouteMatch::NotFound
        ));
        assert!(matches!(
            r.find(Method::Get, "/healthz/extra"),
            RouteMatch::NotFound
        ));
        for path in [
            "/healthz/",
            "//healthz",
            "/",
            "",
            "healthz",
            "/api/v1/activities/",
            "/api/v1/activities/7/",
            "/api/v1/activities/7/orders/",
            "/api/v1/activities/7/orders/x/y/z/w/v/u/t/s/r",
            "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p",
            "/api/v1/activitiez/7",
            "/api/v2/activities/7",
            "/API/v1/activities/7",
        ] {
            assert!(
                matches!(r.find(Method::Get, path), RouteMatch::NotFound),
                "{path}"
            );
        }
        match r.find(Method::Get, "/api/v1/orders/x%2Fy") {
            RouteMatch::Found(5, p) => assert_eq!(p.get(0), Some("x%2Fy")),
            other => panic!("{other:?}"),
        }
        match r.find(Method::Post, "/healthz") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, "GET, HEAD"),
            other => panic!("{other:?}"),
        }
        match r.find(Method::Delete, "/api/v1/activities") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, "POST"),
            other => panic!("{other:?}"),
        }
    }

    /// The compiled matcher agrees with matching segment by segment (the
    /// definition) on every path built from these pieces.
    #[test]
    fn same_as_segment_by_segment() {
        fn reference(r: &Router<u8>, path: &str) -> Option<(u8, Vec<String>)> {
            let rest = path.strip_prefix('/')?;
            let parts: Vec<&str> = rest.split('/').collect();
            'p: for p in &r.patterns {
                if p.segs.len() != parts.len() {
                    continue;
                }
                let mut params = Vec::new();
                for (seg, part) in p.segs.iter().zip(&parts) {
                    match seg {
                        Seg::Lit(l) if l == part => {}
                        Seg::Lit(_) => continue 'p,
                        Seg::Param if part.is_empty() => continue 'p,
                        Seg::Param => params.push(part.to_string()),
                    }
                }
                return Some((p.methods[0].1, params));
            }
            None
        }
        let r = router();
        let words = ["", "api", "v1", "activities", "orders", "healthz", "7", "x"];
        let mut paths = vec![String::new(), "x".to_string()];
        for a in words {
            for b in words {
                for c in words {
                    for d in ["", "/", "/7", "/orders", "/7/orders", "/x/y"] {
                        paths.push(format!("/{a}/{b}/{c}{d}"));
                        paths.push(format!("/{a}/{b}{d}"));
                        paths.push(format!("/{a}{d}"));
                    }
                }
            }
        }
        for path in &paths {
            let got = match r.find(Method::Get, path) {
                RouteMatch::Found(id, p) => Some((
                    id,
                    (0..p.len())
                        .map(|i| p.get(i).unwrap().to_string())
                        .collect(),
                )),
                RouteMatch::MethodNotAllowed { .. } => {
                    // The pattern matched; which route is the reference's.
                    reference(&r, path)
                }
                RouteMatch::NotFound => None,
            };
            assert_eq!(got, reference(&r, path), "{path}");
        }
    }

    /// HEAD finds every GET route (RFC 9110 §9.3.2) and only those; a
    /// route registered for HEAD itself wins over the GET one.
    #[test]
    fn head_is_served_by_get_routes() {
        let r = router();
        match r.find(Method::Head, "/api/v1/activities/9") {
            RouteMatch::Found(2, p) => assert_eq!(p.get(0), Some("9")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.find(Method::Head, "/healthz"),
            RouteMatch::Found(1, _)
        ));
        match r.find(Method::Head, "/api/v1/activities") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, "POST"),
            other => panic!("{other:?}"),
        }
        let own = Router::new()
            .route(Method::Get, "/x", 1u8)
            .route(Method::Head, "/x", 2u8);
        assert!(matches!(
            own.find(Method::Head, "/x"),
            RouteMatch::Found(2, _)
        ));
        match own.find(Method::Post, "/x") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, "GET, HEAD"),
            other => panic!("{other:?}"),
        }
    }
}
