//! Jobs that only package: a completed job's `cmaf` renditions, as they are, announced again
//! with more caption tracks (`POST /v1/jobs/{id}/captions`).
//!
//! Such a job encodes nothing: its worker copies the completed job's package into its own
//! folder (storage-side copies), converts the new caption files, and re-renders both manifests
//! from the package's `package.json`. The job's `outputs` are the one `cmaf` output as it now
//! stands (the completed job's options, its caption tracks merged with the new ones), so a job
//! made from this one sees every track, and the new tracks are in [`Repackage::captions`].

use serde::{Deserialize, Serialize};

use super::{JobSpec, OutputRequest};
use crate::domain::delivery::{CaptionTrack, validate_captions};
use crate::domain::keys::{validate_job_id, validate_key, validate_prefix};
use crate::domain::preset::Preset;

/// What a packaging job packages again, and what it adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repackage {
    /// The completed job whose `cmaf` output is packaged again; it is left as it is.
    pub job_id: String,
    /// That job's folder, where its manifest is.
    pub output_dir: String,
    /// The caption tracks to add, among the caller's uploads.
    pub captions: Vec<CaptionTrack>,
    /// Whether a track in a language the package has replaces that track (else it is refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// Why a completed job cannot be packaged again as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepackageError {
    #[error("the job has no `cmaf` output")]
    NoCmafOutput,
    #[error("the package has a caption track in `{0}` already; set `replace` to replace it")]
    LanguageTaken(String),
    #[error("{0}")]
    Invalid(String),
}

/// The `cmaf` output of a job packaging `old` again with `captions`: `old`'s options, its
/// caption tracks with the new ones (a new track in a language `old` has replaces it only with
/// `replace`).
pub fn repackaged_output(
    old: &JobSpec,
    captions: &[CaptionTrack],
    replace: bool,
) -> Result<OutputRequest, RepackageError> {
    let output = old.outputs.iter().find(|o| o.preset == Preset::Cmaf).ok_or(RepackageError::NoCmafOutput)?;
    validate_captions(captions).map_err(RepackageError::Invalid)?;
    let mut tracks = output.captions.clone().unwrap_or_default();
    for track in captions {
        let same = |t: &CaptionTrack| t.language.eq_ignore_ascii_case(&track.language);
        if tracks.iter().any(same) && !replace {
            return Err(RepackageError::LanguageTaken(track.language.clone()));
        }
        tracks.retain(|t| !same(t));
        tracks.push(track.clone());
    }
    Ok(OutputRequest { captions: Some(tracks), ..output.clone() })
}

impl Repackage {
    /// Checks a packaging job: it packages another job's output and adds tracks to it, its one
    /// output is `cmaf` and holds every new track, and it asks for nothing that encodes.
    pub(super) fn validate(&self, job: &JobSpec) -> Result<(), String> {
        validate_job_id(&self.job_id).map_err(|e| format!("repackaged job id: {e}"))?;
        validate_prefix(&self.output_dir).map_err(|e| format!("repackaged job folder: {e}"))?;
        if self.job_id == job.job_id || self.output_dir == job.output_dir {
            return Err("a packaging job cannot package its own output".into());
        }
        validate_captions(&self.captions)?;
        for track in &self.captions {
            validate_key(&track.key).map_err(|e| format!("caption key: {e}"))?;
        }
        let [output] = job.outputs.as_slice() else {
            return Err("a packaging job has exactly one output, `cmaf`".into());
        };
        let tracks = output.captions.as_deref().unwrap_or_default();
        if output.preset != Preset::Cmaf || !self.captions.iter().all(|t| tracks.contains(t)) {
            return Err("a packaging job's one output is `cmaf`, with every caption track it adds".into());
        }
        if job.split.is_some() || job.import.is_some() || job.qc.is_some() || job.loudness.is_some() {
            return Err("a packaging job encodes nothing: no split, import, qc or loudness".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{SpecError, sample_job};
    use crate::domain::split::request::SplitRequest;

    fn track(key: &str, language: &str) -> CaptionTrack {
        CaptionTrack { key: key.into(), language: language.into(), name: None }
    }

    fn cmaf_job() -> JobSpec {
        let mut job = sample_job();
        job.outputs = vec![
            OutputRequest { captions: Some(vec![track("uploads/en.srt", "en")]), ..OutputRequest::new(Preset::Cmaf) },
            OutputRequest::new(Preset::Thumbnail),
        ];
        job
    }

    fn packaging(old: &JobSpec, captions: Vec<CaptionTrack>, replace: bool) -> Result<JobSpec, RepackageError> {
        let output = repackaged_output(old, &captions, replace)?;
        let repackage = Repackage { job_id: old.job_id.clone(), output_dir: old.output_dir.clone(), captions, replace };
        Ok(JobSpec {
            job_id: "job-2".into(),
            outputs: vec![output],
            output_dir: "outputs/a.mp4/job-2/".into(),
            repackage: Some(Box::new(repackage)),
            ..old.clone()
        })
    }

    #[test]
    fn new_tracks_join_the_old_ones_and_replace_one_only_when_asked() {
        let old = cmaf_job();
        let job = packaging(&old, vec![track("uploads/fr.srt", "fr")], false).unwrap();
        assert_eq!(job.validate(), Ok(()));
        let tracks = job.outputs[0].captions.clone().unwrap();
        assert_eq!(tracks, [track("uploads/en.srt", "en"), track("uploads/fr.srt", "fr")]);

        let taken = packaging(&old, vec![track("uploads/en2.srt", "EN")], false);
        assert_eq!(taken, Err(RepackageError::LanguageTaken("EN".into())));
        let replaced = packaging(&old, vec![track("uploads/en2.srt", "EN")], true).unwrap();
        assert_eq!(replaced.outputs[0].captions.clone().unwrap(), [track("uploads/en2.srt", "EN")]);
        assert_eq!(replaced.validate(), Ok(()));

        assert_eq!(
            packaging(&sample_job(), vec![track("uploads/fr.srt", "fr")], false),
            Err(RepackageError::NoCmafOutput)
        );
        let twice = vec![track("uploads/fr.srt", "fr"), track("uploads/fr2.srt", "fr")];
        assert!(matches!(packaging(&old, twice, true), Err(RepackageError::Invalid(_))));
        assert!(matches!(packaging(&old, Vec::new(), false), Err(RepackageError::Invalid(_))));
    }

    #[test]
    fn a_packaging_job_is_checked() {
        let old = cmaf_job();
        let job = packaging(&old, vec![track("uploads/fr.srt", "fr")], false).unwrap();
        let refused = |change: &dyn Fn(&mut JobSpec)| {
            let mut bad = job.clone();
            change(&mut bad);
            assert!(matches!(bad.validate(), Err(SpecError::Options(_))), "{bad:?}");
        };
        refused(&|j| j.repackage.as_mut().unwrap().job_id = j.job_id.clone());
        refused(&|j| j.repackage.as_mut().unwrap().job_id = "../x".into());
        refused(&|j| j.repackage.as_mut().unwrap().output_dir = j.output_dir.clone());
        refused(&|j| j.repackage.as_mut().unwrap().captions[0].key = "uploads/../../etc/passwd".into());
        refused(&|j| j.repackage.as_mut().unwrap().captions.push(track("uploads/de.srt", "de")));
        refused(&|j| j.outputs.push(OutputRequest::new(Preset::Thumbnail)));
        refused(&|j| j.outputs[0] = OutputRequest::new(Preset::Mp4H264));
        refused(&|j| j.split = Some(SplitRequest { enabled: false, segment_duration: None }));
        let json = serde_json::to_string(&job).unwrap();
        assert!(json.contains("\"repackage\":{\"job_id\":\"job-1\""), "{json}");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), job);
        assert!(!serde_json::to_string(&old).unwrap().contains("repackage"), "other jobs do not change");
    }
}
