//! `acl`: allow or deny consumers by group. Runs after authentication; without a consumer the
//! request is refused with 401, an authenticated consumer that is not allowed gets 403.

use gw_config::plugins::Acl as Conf;
use gw_core::{Ctx, Flow, Plugin, RequestHead, Result, priority};

use crate::util::{forbidden, missing_credentials};

pub(crate) struct Acl {
    allow: Vec<String>,
    deny: Vec<String>,
    send_groups: bool,
}

impl Acl {
    pub(crate) fn new(c: &Conf) -> Self {
        Acl { allow: c.allow.clone(), deny: c.deny.clone(), send_groups: !c.hide_groups_header }
    }
}

#[gw_core::plugin]
impl Plugin for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn priority(&self) -> i32 {
        priority::ACL
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let Some(c) = &cx.consumer else {
            return Ok(Flow::Respond(missing_credentials("")));
        };
        let in_any = |list: &[String]| c.groups.iter().any(|g| list.contains(g));
        let allowed = if !self.allow.is_empty() { in_any(&self.allow) } else { !in_any(&self.deny) };
        if !allowed {
            return Ok(Flow::Respond(forbidden("you are not allowed to use this route")));
        }
        if self.send_groups {
            let h = gw_core::identity::CONSUMER_GROUPS.clone();
            match &c.groups_header {
                Some(v) => {
                    req.headers.insert(h, v.clone());
                }
                None => {
                    req.headers.remove(h);
                }
            }
        }
        Ok(Flow::Continue)
    }
}
