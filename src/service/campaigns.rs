//! CreateCampaign: read and validate the spec, then hand the rest of the caller's stream to the
//! campaign engine (`campaign.rs`), which answers one message per chunk session it starts.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Call, CallBotApi, fail};
use crate::{
    campaign::{self, CampaignRun},
    deadline,
    domain::CampaignPlan,
    pb,
};

/// CreateCampaign answers buffered per call: one per chunk, so a few are enough; a caller that
/// stops reading stops the campaign from reading its contacts (backpressure).
const CAMPAIGN_BUFFER: usize = 4;

impl CallBotApi {
    /// CreateCampaign.
    pub(super) async fn start_campaign(
        &self,
        request: Request<tonic::Streaming<pb::CreateCampaignRequest>>,
    ) -> Result<Response<ReceiverStream<Result<pb::CreateCampaignResponse, Status>>>, Status> {
        // The caller's deadline bounds the whole stream; each chunk's exchange is bounded by
        // --upstream-timeout within it.
        let Call { mut ctx, tenant, caller_deadline: stream_deadline } = self.call(&request)?;
        let mut incoming = request.into_inner();
        let spec = campaign::read_spec(&mut incoming, stream_deadline).await.map_err(|e| e.into_status(&ctx))?;
        ctx.deadline = deadline::for_exchange(self.settings.upstream_timeout, stream_deadline);
        let now = crate::policy::system_time(self.policy.now());
        let plan = CampaignPlan::parse(spec, self.max_contacts(), now).map_err(|e| fail(&ctx, e))?;
        let variables = match plan.check_variables {
            true => Some(self.script_variables(&ctx, plan.script_id()).await?),
            false => None,
        };
        let (tx, rx) = mpsc::channel(CAMPAIGN_BUFFER);
        let run = CampaignRun {
            upstream: self.upstream.clone(),
            plan,
            variables,
            ctx,
            stream_deadline,
            upstream_timeout: self.settings.upstream_timeout,
            sessions: self.session_log(tenant.clone()),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
            tenant,
        };
        tokio::spawn(run.run(incoming, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
