use super::*;

const MS: Duration = Duration::from_millis(1);

fn cfg() -> config::Breaker {
    config::Breaker {
        enabled: true,
        window: BreakerWindow::Count(10),
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 50.0,
        slow_call_duration: Duration::from_secs(5),
        minimum_calls: 5,
        wait_in_open: Duration::from_secs(30),
        half_open_calls: 3,
        failure_codes: vec![14, 4, 13],
    }
}

fn call(b: &Arc<Breaker>, failed: bool, took: Duration, now: Instant) {
    let p = b.try_acquire(now).expect("permitted");
    b.record(p, failed, took, now);
}

#[test]
fn does_not_open_before_the_minimum_calls() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    for _ in 0..4 {
        call(&b, true, MS, t);
    }
    assert_eq!(b.state(), State::Closed, "4 failures of 4 calls, but the minimum is 5");
    assert_eq!(b.snapshot(t).failure_rate, -1.0);
    call(&b, true, MS, t);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn opens_on_the_failure_rate_threshold_exactly() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    // 2 failures of 5 = 40 %: stays closed.
    for failed in [true, false, true, false, false] {
        call(&b, failed, MS, t);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(t).failure_rate, 40.0);
    // 3 of 6 = 50 %: at the threshold, opens.
    call(&b, true, MS, t);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn opens_on_the_slow_call_rate() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    for slow in [true, true, false, false] {
        call(&b, false, if slow { Duration::from_secs(5) } else { MS }, t);
    }
    assert_eq!(b.state(), State::Closed);
    call(&b, false, Duration::from_secs(6), t);
    assert_eq!(b.state(), State::Open, "3 slow of 5 successful calls");
    assert_eq!(b.snapshot(t).slow_call_rate, 60.0);
}

#[test]
fn open_refuses_at_once_then_half_opens_after_the_wait() {
    let t = Instant::now();
    let b = Breaker::new("payments@shard-1".into(), cfg(), t);
    for _ in 0..5 {
        call(&b, true, MS, t);
    }
    let r = b.try_acquire(t + Duration::from_secs(10)).expect_err("open");
    assert_eq!((r.state, r.retry_in), (State::Open, Some(Duration::from_secs(20))));
    assert_eq!(r.to_string(), "circuit breaker 'payments@shard-1' is open; it lets a trial call through in 20.0 s");
    assert_eq!(b.snapshot(t).not_permitted_calls, 1);
    let p = b.try_acquire(t + Duration::from_secs(30)).expect("half-open trial");
    assert_eq!(b.state(), State::HalfOpen);
    drop(p);
}

#[test]
fn half_open_admits_exactly_the_permitted_calls() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    for _ in 0..5 {
        call(&b, true, MS, t);
    }
    let later = t + Duration::from_secs(31);
    let trials: Vec<Permit> = (0..3).map(|_| b.try_acquire(later).expect("trial")).collect();
    let r = b.try_acquire(later).expect_err("a fourth call waits");
    assert_eq!(r.state, State::HalfOpen);
    for p in trials {
        b.record(p, false, MS, later);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(later).buffered_calls, 0, "closing clears the window");
}

#[test]
fn half_open_reopens_on_failed_trials() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    for _ in 0..5 {
        call(&b, true, MS, t);
    }
    let later = t + Duration::from_secs(31);
    call(&b, true, MS, later);
    call(&b, true, MS, later);
    call(&b, false, MS, later);
    assert_eq!(b.state(), State::Open, "2 of 3 trials failed");
    assert!(b.try_acquire(later + Duration::from_secs(29)).is_err());
    assert!(b.try_acquire(later + Duration::from_secs(30)).is_ok());
}

#[test]
fn cannot_get_stuck_half_open() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    for _ in 0..5 {
        call(&b, true, MS, t);
    }
    let later = t + Duration::from_secs(31);
    // Trial callers that go away free their slots...
    for _ in 0..3 {
        drop(b.try_acquire(later).expect("trial"));
    }
    // ...so later callers still get to decide, and a success closes it.
    for _ in 0..3 {
        call(&b, false, MS, later);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn stale_outcomes_do_not_decide_a_trial() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    let straggler = b.try_acquire(t).expect("closed");
    for _ in 0..5 {
        call(&b, true, MS, t);
    }
    let later = t + Duration::from_secs(31);
    let trial = b.try_acquire(later).expect("trial");
    // The call admitted while closed finishes now: ignored.
    b.record(straggler, true, MS, later);
    assert_eq!(b.state(), State::HalfOpen);
    b.record(trial, false, MS, later);
    assert_eq!(b.state(), State::HalfOpen, "one of three trials done");
}

#[test]
fn time_window_counts_only_recent_calls() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), config::Breaker { window: BreakerWindow::Time(Duration::from_secs(10)), ..cfg() }, t);
    for _ in 0..4 {
        call(&b, true, MS, t);
    }
    // Ten seconds later those failures have left the window.
    let later = t + Duration::from_secs(10);
    for _ in 0..4 {
        call(&b, false, MS, later);
    }
    call(&b, true, MS, later);
    assert_eq!(b.state(), State::Closed, "1 failure of 5 calls in the window");
    assert_eq!(b.snapshot(later).failure_rate, 20.0);
}

#[test]
fn operators_can_force_and_release() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), cfg(), t);
    b.force(Force::Open, t);
    let r = b.try_acquire(t).expect_err("forced open");
    assert!(r.to_string().contains("forced_open by an operator"));
    b.force(Force::Closed, t);
    for _ in 0..20 {
        call(&b, true, MS, t);
    }
    assert_eq!(b.state(), State::ForcedClosed, "forced closed ignores failures");
    b.force(Force::Normal, t);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(t).buffered_calls, 0);
}

#[test]
fn a_disabled_breaker_never_opens() {
    let t = Instant::now();
    let b = Breaker::new("b".into(), config::Breaker { enabled: false, ..cfg() }, t);
    for _ in 0..50 {
        call(&b, true, MS, t);
    }
    assert!(b.try_acquire(t).is_ok());
}
