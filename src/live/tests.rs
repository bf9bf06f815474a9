//! The live view's users, tokens, roles and resumes, without a browser.
use super::*;

fn live() -> Live {
    Live::new(
        LiveConfig {
            max_viewers: 2,
            ..LiveConfig::default()
        },
        crate::browser::mux::Mux::closed(),
        None,
        (false, false),
        None,
    )
}

#[tokio::test]
async fn a_user_that_left_comes_back_once_with_its_secret_and_token() {
    let l = live();
    let t = l.mint([Role::Control].into()).unwrap();
    let (a, _ra) = l.join(&t, l.token_roles(&t).unwrap()).unwrap();
    l.change_roles(
        std::slice::from_ref(&a.id),
        &[Role::CursorData].into(),
        false,
        true,
    );
    let secret = a.resume.clone();
    l.leave(&a);
    // Another token, or another secret: a new user.
    let t2 = l.mint([Role::Control].into()).unwrap();
    let (b, _rb) = l
        .join_resuming(&t2, [Role::Control].into(), Some(&secret))
        .unwrap();
    assert_ne!(b.id, a.id);
    let (c, _rc) = l
        .join_resuming(&t, [Role::Control].into(), Some("guess"))
        .unwrap();
    assert_ne!(c.id, a.id);
    l.forget(&c);
    // Its own: the same id, with the roles it had.
    let (back, _r) = l
        .join_resuming(&t, [Role::Control].into(), Some(&secret))
        .unwrap();
    assert_eq!(back.id, a.id);
    assert!(back.has(Role::CursorData));
    // Once only; and a removed user never comes back.
    l.leave(&back);
    let (again, _r) = l
        .join_resuming(&t, [Role::Control].into(), Some(&secret))
        .unwrap();
    assert_ne!(again.id, a.id);
    l.forget(&again);
    // Removing b revoked its token: a socket of it still being admitted joins no more.
    l.kick(&b.id);
    assert_eq!(
        l.join_resuming(&t2, [Role::Control].into(), Some(&b.resume))
            .unwrap_err(),
        JoinError::Revoked
    );
}

#[tokio::test]
async fn a_user_away_comes_back_with_the_roles_and_permissions_changed_meanwhile() {
    let l = live();
    let t = l.mint([Role::Control].into()).unwrap();
    let (a, _ra) = l.join(&t, l.token_roles(&t).unwrap()).unwrap();
    let secret = a.resume.clone();
    l.leave(&a);
    l.change_roles(
        std::slice::from_ref(&a.id),
        &[Role::Control].into(),
        false,
        false,
    );
    assert!(l.set_permissions(&a.id, Some(7), None, Some(true)));
    let (back, _r) = l
        .join_resuming(&t, [Role::Control].into(), Some(&secret))
        .unwrap();
    assert_eq!(back.id, a.id);
    assert!(
        !back.has(Role::Control),
        "control came back with the resume"
    );
    assert_eq!(back.permissions().priority, 7);
    assert!(back.permissions().control_disabled);
}

#[tokio::test]
async fn a_token_reconnecting_in_a_loop_pushes_out_no_one_elses_resume() {
    let l = live();
    let t1 = l.mint([Role::Control].into()).unwrap();
    let t2 = l.mint([].into()).unwrap();
    let (a, _ra) = l.join(&t1, l.token_roles(&t1).unwrap()).unwrap();
    let secret = a.resume.clone();
    l.leave(&a);
    for _ in 0..2 * RESUME_KEPT {
        let (x, _rx) = l.join(&t2, l.token_roles(&t2).unwrap()).unwrap();
        l.leave(&x);
    }
    let (back, _r) = l
        .join_resuming(&t1, [Role::Control].into(), Some(&secret))
        .unwrap();
    assert_eq!(back.id, a.id, "A's resume was pushed out");
}

#[tokio::test]
async fn tokens_roles_preemption_and_limits() {
    let l = live();
    let t = l.mint(roles::DEFAULT.iter().copied().collect()).unwrap();
    assert!(l.token_roles(&t).unwrap().contains(&Role::Control));
    assert!(l.token_roles("nope").is_none());
    let (a, _ra) = l.join(&t, l.token_roles(&t).unwrap()).unwrap();
    let other = l.mint(BTreeSet::new()).unwrap();
    let (b, _rb) = l.join(&other, BTreeSet::new()).unwrap();
    assert_eq!(
        l.join(&other, BTreeSet::new()).unwrap_err(),
        JoinError::TooManyViewers(2)
    );
    assert!(l.accept_input(&a));
    assert!(!l.accept_input(&b), "no control role");
    l.change_roles(
        std::slice::from_ref(&a.id),
        &[Role::Control].into(),
        true,
        true,
    );
    assert!(l.accept_input(&b), "exclusive add gave b control");
    l.set_permissions(&a.id, Some(5), Some(0), None);
    assert!(!l.accept_input(&b), "a has higher priority and never idles");
    l.set_permissions(&a.id, None, Some(1), None);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(l.accept_input(&b), "a is idle");
    l.set_permissions(&b.id, None, None, Some(true));
    assert!(!l.accept_input(&b), "control disabled");
    assert!(l.kick(&b.id));
    assert_eq!(l.viewer_count(), 1);
    assert!(!l.kick(&b.id));
}

#[tokio::test]
async fn a_session_holds_a_bounded_number_of_viewer_tokens() {
    let l = live();
    for _ in 1..MAX_TOKENS {
        assert!(l.mint(BTreeSet::new()).is_some());
    }
    assert!(l.mint(BTreeSet::new()).is_some(), "the last one");
    assert!(l.mint(BTreeSet::new()).is_none(), "one past the bound");
}

#[tokio::test]
async fn asking_whether_a_user_may_send_input_does_not_make_it_active() {
    let l = live();
    let t = l.mint([Role::Control].into()).unwrap();
    let (a, _ra) = l.join(&t, l.token_roles(&t).unwrap()).unwrap();
    let (b, _rb) = l.join(&t, l.token_roles(&t).unwrap()).unwrap();
    // a outranks b while a is active (input within 60 s); a is idle now.
    l.set_permissions(&a.id, Some(5), Some(60_000), None);
    assert!(l.may_input(&a));
    assert!(l.accept_input(&b), "a only asked: it is still idle");
    assert!(l.accept_input(&a));
    assert!(!l.accept_input(&b), "a sent input: b is preempted");
}
