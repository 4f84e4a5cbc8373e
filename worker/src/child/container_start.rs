//! A container job's container, made before its setup (`run_job`): its
//! input files written first (the container mounts them), its egress
//! proxy's refusals streamed into the job's log (`container/`).

use super::{EventSink, JobDirs, JobEvent};
use crate::inputs::InputFiles;
use crate::worktree::job;
use aam_protocol::messages::Assignment;

/// Makes a container job's container (its input files written first, to
/// be mounted), its egress refusals streamed into the job's log: the
/// input files, for a container job. Nothing for another job; why the
/// container could not be made otherwise.
pub(super) async fn start_container(
    tree: &mut job::JobTree,
    assignment: &Assignment,
    dirs: &JobDirs,
    sink: &impl EventSink,
    ports: &[u16],
) -> Result<Option<InputFiles>, String> {
    let order = assignment.worktree.as_deref();
    let Some(spec) = order.and_then(|o| o.workspace.as_ref()?.container.as_ref()) else {
        return Ok(None);
    };
    let Some(containers) = &dirs.containers else {
        return Err("this worker has no container engine (podman or docker)".into());
    };
    let inputs = crate::inputs::write(assignment)
        .map_err(|e| format!("writing the job's input files: {e}"))?;
    let read_only = match inputs.dir() {
        Some(dir) => vec![dir.to_path_buf()],
        None => vec![inputs.json.clone(), inputs.markdown.clone()],
    };
    let name = crate::container::job::container_name(
        containers,
        &assignment.job.session.to_string(),
        assignment.job.index,
        assignment.attempt,
    );
    let plan = crate::container::job::ContainerPlan {
        spec,
        name,
        worktree: &tree.path,
        read_only,
        ports,
    };
    let (container, refusals) =
        crate::container::job::JobContainer::start(containers, plan).await?;
    tracing::info!(container = %container.name, image = %spec.image,
        network = %spec.network().describe(), "container started");
    if let Some(mut refusals) = refusals {
        let (sink, attempt) = (sink.clone(), assignment.attempt_ref());
        tokio::task::spawn_local(async move {
            while let Some(line) = refusals.recv().await {
                let data = line.into_bytes();
                sink.send(JobEvent::Output { attempt, data }).await;
            }
        });
    }
    tree.container = Some(container);
    Ok(Some(inputs))
}
