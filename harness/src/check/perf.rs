//! docs/semantics.md#rule-global-ipte: never more machine-wide quiesce events than the
//! eager code for the same program (a performance divergence, reported apart). A batch
//! may pay with a global IPTE-range what eager paid with an IDTE (an owed flush at
//! switch-in), so all machine-wide invalidations count.

use super::{Checker, Class};
use lazymmu_model::exec::Trace;

pub(super) fn at_end(ck: &mut Checker, oracle: &Trace) {
    let n = ck.program.steps.len();
    let (tc, oc) = (&ck.target.end.counters, &oracle.end.counters);
    if tc.quiesce_events() <= oc.quiesce_events() {
        return;
    }
    let text = |c: &lazymmu_model::machine::Counters| {
        format!(
            "{} quiesce events ({} global IPTE, {} IDTE)",
            c.quiesce_events(),
            c.global_iptes(),
            c.idte
        )
    };
    let (t, o) = (text(tc), text(oc));
    ck.finding(
        Class::PerfGlobalIpte,
        n,
        None,
        t,
        o,
        "more machine-wide invalidations (global IPTE, IDTE) than the eager code".into(),
    );
}
