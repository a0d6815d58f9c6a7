//! Per-host parallelism (threads, not async: ssh2 and mysql are blocking): run a closure on
//! every item at once and get the results back in item order. A panicking worker becomes an
//! error, never a panic of the caller.

use anyhow::{anyhow, Result};

/// `f` on every item, one thread each; results in item order.
pub fn each<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Vec<Result<R>> {
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = items.iter().map(|it| s.spawn(move || f(it))).collect();
        hs.into_iter().map(join).collect()
    })
}

/// [`each`] on items the workers change (one connection per host, say).
pub fn each_mut<T: Send, R: Send>(
    items: &mut [T],
    f: impl Fn(&mut T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = items.iter_mut().map(|it| s.spawn(move || f(it))).collect();
        hs.into_iter().map(join).collect()
    })
}

fn join<R>(h: std::thread::ScopedJoinHandle<'_, Result<R>>) -> Result<R> {
    h.join()
        .unwrap_or_else(|_| Err(anyhow!("internal error: a worker thread panicked")))
}

/// The errors of a batch, each with its full context, in order.
pub fn errors<R>(results: Vec<Result<R>>) -> Vec<String> {
    results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_item_order_and_a_panic_is_an_error() {
        let r = each(&[3u64, 1, 2], |n| {
            std::thread::sleep(std::time::Duration::from_millis(*n * 5));
            if *n == 2 {
                panic!("boom");
            }
            Ok(*n * 10)
        });
        assert_eq!(r[0].as_ref().unwrap(), &30);
        assert_eq!(r[1].as_ref().unwrap(), &10);
        assert!(r[2].as_ref().unwrap_err().to_string().contains("panicked"));
        let mut v = vec![1, 2];
        let _ = each_mut(&mut v, |x| {
            *x += 1;
            Ok(())
        });
        assert_eq!(v, vec![2, 3]);
        assert_eq!(
            errors(vec![Ok(1), Err(anyhow!("x"))]),
            vec!["x".to_string()]
        );
    }
}
