//! What delivery reports back: a notification settled (delivered, given
//! up or dropped) leaves the store's outbox with the next commit.

use super::Scheduler;
use crate::notify::NoticeSettled;
use actix::prelude::*;

impl Handler<NoticeSettled> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: NoticeSettled, ctx: &mut Context<Self>) {
        self.notify.settled(msg);
        self.settle(ctx, Vec::new());
    }
}
