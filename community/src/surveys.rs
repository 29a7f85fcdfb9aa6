//! Satisfaction surveys (not yet built).

use crate::CommunityState;
use lectern_web::ApiRouter;

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    api
}
