//! `/openapi.json`, generated from the handlers' annotations and the types' derives.
//!
//! [`Preset`] and [`OutputRequest`] live in files other work extends, so their schemas are
//! written here from the code rather than derived there: the preset names come from
//! [`Preset::ALL`]. Fields added to `OutputRequest` must be added to its schema below: the
//! schema refuses unknown properties, as the type does (the `output_request_schema_matches_the_type`
//! test catches fields that serialise by default; optional ones need adding by hand).

use std::borrow::Cow;

use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Server};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::routes;
use crate::domain::delivery::{MAX_CAPTION_TRACKS, VideoCodec};
use crate::domain::job::{OutputRequest, option_range};
use crate::domain::per_title::TARGET_RANGE;
use crate::domain::preset::Preset;

impl PartialSchema for Preset {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Preset::all().into_iter().map(|p| p.name())))
            .description(Some("A server-side preset: a named set of ffmpeg settings."))
            .into()
    }
}

impl ToSchema for Preset {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Preset")
    }
}

impl PartialSchema for OutputRequest {
    fn schema() -> RefOr<Schema> {
        let gif_duration = match option_range(Preset::Gif, "duration") {
            Some(gif) => format!("Seconds of source the output covers (gif: {} to {}; default 3).", gif.min, gif.max),
            None => "Seconds of source the output covers.".to_string(),
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("preset", utoipa::openapi::Ref::from_schema_name("Preset"))
            .required("preset")
            .property(
                "start",
                bounded("start", "Seconds into the source where the output starts (mp4-h264*, webm-vp9, gif, mp3)."),
            )
            .property("duration", bounded("duration", &gif_duration))
            .property(
                "max_height",
                bounded("max_height", "Cap on the short side in pixels (mp4-h264*, webm-vp9, hls, cmaf)."),
            )
            .property(
                "time",
                bounded("time", "Seconds into the source of a thumbnail (default: 10 % of the duration)."),
            )
            .property(
                "quality",
                ObjectBuilder::new()
                    .description(Some("hls, and cmaf with h264 rungs: make the ladder per title to reach this VMAF (docs/per-title.md)."))
                    .property(
                        "vmaf",
                        ObjectBuilder::new()
                            .schema_type(Type::Number)
                            .minimum(Some(TARGET_RANGE.min))
                            .maximum(Some(TARGET_RANGE.max)),
                    )
                    .required("vmaf")
                    .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false))),
            )
            .property("codecs", codecs_schema())
            .property(
                "packaging",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["segments", "single_file"]))
                    .description(Some("cmaf only: numbered segments (default) or one file per rendition.")),
            )
            .property("captions", captions_schema())
            .property(
                "embedded_captions",
                ObjectBuilder::new().schema_type(Type::Boolean).description(Some(
                    "cmaf only: also package the source's own text tracks as WebVTT renditions (default true).",
                )),
            )
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .description(Some("One output of a job."))
            .into()
    }
}

/// `outputs[].codecs`: a cmaf ladder's video codecs.
fn codecs_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(VideoCodec::ALL.iter().map(|c| c.name()))),
        )
        .min_items(Some(1))
        .max_items(Some(VideoCodec::ALL.len()))
        .unique_items(true)
        .description(Some("cmaf only: the video codecs, each a ladder of its own (default [\"h264\"])."))
}

/// `outputs[].captions`: a cmaf ladder's caption files.
fn captions_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .property(
                    "key",
                    ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(1024)),
                )
                .required("key")
                .property(
                    "language",
                    ObjectBuilder::new().schema_type(Type::String).min_length(Some(2)).max_length(Some(35)),
                )
                .required("language")
                .property(
                    "name",
                    ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(64)),
                )
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false))),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_CAPTION_TRACKS))
        .description(Some(
            "cmaf only: caption files among your uploads (SubRip, WebVTT or SCC), each a WebVTT rendition.",
        ))
}

/// `captions` of `POST /v1/jobs/{id}/captions`: the same tracks as a cmaf output's.
pub(crate) fn caption_tracks_schema() -> ArrayBuilder {
    captions_schema().description(Some(
        "Caption files among your uploads (SubRip, WebVTT or SCC), each a new WebVTT rendition of the package.",
    ))
}

impl ToSchema for OutputRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OutputRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((<Preset as ToSchema>::name().into_owned(), <Preset as PartialSchema>::schema()));
    }
}

/// An option's schema with the widest range jobs accept for it ([`option_range`]; some presets
/// narrow it, as `GET /v1/presets` tells).
fn bounded(option: &str, description: &str) -> ObjectBuilder {
    let schema = ObjectBuilder::new().description(Some(description.to_string()));
    let Some(range) = option_range(Preset::Mp4H264, option) else { return schema };
    let kind = if range.integer { Type::Integer } else { Type::Number };
    schema.schema_type(kind).minimum(Some(range.min)).maximum(Some(range.max))
}

/// The bearer scheme every operation uses unless it says otherwise.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        openapi.servers = Some(vec![Server::new("/")]);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "media-worker API",
        description = "Uploads, transcoding jobs, live progress and downloads. Errors are always \
                       `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::health::openapi_json,
        routes::uploads::create,
        routes::uploads::put,
        routes::uploads::info,
        routes::multipart::create,
        routes::multipart::sign_part,
        routes::multipart::put_part,
        routes::multipart::list,
        routes::multipart::complete,
        routes::multipart::abort,
        routes::jobs::create,
        routes::jobs::add_captions,
        routes::jobs::list,
        routes::presets::list,
        routes::jobs::get,
        routes::events::events,
        routes::jobs::delete,
        routes::files::get,
    ),
    // The webhook payload (docs/notifications.md) is part of the contract too.
    components(schemas(Preset, OutputRequest, crate::notify::event::NotificationEvent)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "uploads", description = "Where to put files; each upload becomes a job with the default presets"),
        (name = "jobs", description = "Submit, follow, cancel, and delete outputs"),
        (name = "files", description = "Downloads on the local backend"),
        (name = "health", description = "Probes and this document"),
    )
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

pub fn document_json() -> String {
    // Serialising the document's own types cannot fail; an empty object would show the bug.
    serde_json::to_string(&document()).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::Packaging;

    #[test]
    fn the_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/v1/uploads",
            "/v1/uploads/{key}",
            "/v1/jobs",
            "/v1/jobs/{id}/captions",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/events",
            "/v1/files/{key}",
            "/v1/multipart-uploads",
            "/v1/multipart-uploads/{upload_id}",
            "/v1/multipart-uploads/{upload_id}/parts/{part_number}",
            "/v1/multipart-uploads/{upload_id}/complete",
        ] {
            assert!(paths.contains_key(path), "{path} is missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let catalogue = &doc["components"]["schemas"];
        assert!(catalogue["PresetInfo"]["properties"]["ranges"].is_object(), "the presets' ranges");
        assert!(catalogue["PresetList"]["properties"]["states"].is_object(), "the job states");
        assert!(catalogue["OptionBounds"]["properties"]["integer"].is_object());
        assert!(catalogue["PresetInfo"]["properties"]["choices"].is_object(), "the presets' choices");
        assert!(catalogue["OptionChoices"]["properties"]["multiple"].is_object());
        let presets = &doc["components"]["schemas"]["Preset"]["enum"];
        assert_eq!(presets.as_array().unwrap().len(), Preset::ALL.len());
    }

    #[test]
    fn output_request_schema_matches_the_type() {
        // Every field the type serialises must be in the schema, which refuses others.
        let schema = serde_json::to_value(OutputRequest::schema()).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        for preset in Preset::ALL {
            let request = OutputRequest {
                start: Some(1.0),
                duration: Some(2.0),
                max_height: Some(480),
                time: Some(1.0),
                codecs: Some(vec![VideoCodec::H264]),
                packaging: Some(Packaging::SingleFile),
                captions: Some(vec![crate::domain::delivery::CaptionTrack {
                    key: "uploads/a.srt".into(),
                    language: "en".into(),
                    name: None,
                }]),
                ..OutputRequest::new(*preset)
            };
            let value = serde_json::to_value(&request).unwrap();
            for field in value.as_object().unwrap().keys() {
                assert!(properties.contains_key(field), "OutputRequest.{field} is not in its schema");
            }
        }
    }

    #[test]
    fn the_loudness_setting_and_report_are_described() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let setting = &schemas["LoudnessSettings"]["properties"];
        for field in ["target", "true_peak", "mode"] {
            assert!(setting.get(field).is_some(), "LoudnessSettings.{field}: {setting}");
        }
        let request = &schemas["CreateJobRequest"]["properties"];
        assert!(request.get("loudness").is_some(), "{request}");
        assert!(schemas["Manifest"]["properties"].get("loudness").is_some());
    }
}
