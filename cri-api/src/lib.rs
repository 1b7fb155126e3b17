//! The Kubernetes Container Runtime Interface (CRI) `runtime.v1` ImageService (and the
//! RuntimeService's CreateContainer): prost messages and tonic client and server stubs, generated at build time from
//! `proto/runtime/v1/api.proto`.
//!
//! The proto is regcred's own, minimal, transcription of the upstream CRI API: the five
//! ImageService RPCs (ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo),
//! RuntimeService's CreateContainer (the one runtime call the proxy decides on), and the
//! messages they carry, with upstream's field numbers. It is compiled with `protox` (pure
//! Rust), so building needs no `protoc`. Fields that upstream has and this proto lacks are
//! dropped when a message is decoded and encoded again: code that forwards messages
//! (the CRI proxy) must forward the original bytes of anything it does not change.
//!
//! # Quick start
//!
//! Build a `PullImageRequest` as kubelet sends it, and see that the `AuthConfig` does not
//! show its secrets in `Debug`:
//!
//! ```
//! use regcred_cri_api::runtime::v1::{
//!     AuthConfig, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
//! };
//!
//! let request = PullImageRequest {
//!     image: Some(ImageSpec { image: "127.0.0.1:5000/team/app:v1".into(), ..Default::default() }),
//!     auth: Some(AuthConfig {
//!         username: "robot".into(),
//!         password: "s3cret".into(),
//!         server_address: "http://127.0.0.1:5000".into(),
//!         ..Default::default()
//!     }),
//!     sandbox_config: Some(PodSandboxConfig {
//!         metadata: Some(PodSandboxMetadata {
//!             name: "app-0".into(),
//!             namespace: "team".into(),
//!             uid: "6f1c".into(),
//!             attempt: 0,
//!         }),
//!         ..Default::default()
//!     }),
//! };
//! let shown = format!("{request:?}");
//! assert!(shown.contains("robot") && !shown.contains("s3cret"));
//! ```
//!
//! # Calling a runtime over its unix socket
//!
//! The generated client takes any tonic channel; tonic dials `unix://` endpoints itself:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use regcred_cri_api::runtime::v1::{ListImagesRequest, image_service_client::ImageServiceClient};
//!
//! let channel = tonic::transport::Endpoint::from_shared("unix:///run/containerd/containerd.sock")?
//!     .connect()
//!     .await?;
//! let images = ImageServiceClient::new(channel).list_images(ListImagesRequest::default()).await?;
//! println!("{} images", images.into_inner().images.len());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

/// The CRI API packages.
pub mod runtime {
    /// Package `runtime.v1`: the ImageService, its client (`image_service_client`) and its
    /// server (`image_service_server`).
    #[expect(
        clippy::allow_attributes_without_reason,
        reason = "the code tonic-prost-build generates has bare `#[allow]`s"
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));

        impl std::fmt::Debug for AuthConfig {
            /// Shows which fields are set; only `username` and `server_address` are shown
            /// in clear, the password, `auth` and tokens never.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                fn hidden(value: &str) -> &'static str {
                    if value.is_empty() { "" } else { "<redacted>" }
                }
                f.debug_struct("AuthConfig")
                    .field("username", &self.username)
                    .field("password", &hidden(&self.password))
                    .field("auth", &hidden(&self.auth))
                    .field("server_address", &self.server_address)
                    .field("identity_token", &hidden(&self.identity_token))
                    .field("registry_token", &hidden(&self.registry_token))
                    .finish()
            }
        }
    }
}

/// The full gRPC method paths of the ImageService, as they appear on the wire.
pub mod methods {
    /// `ListImages`.
    pub const LIST_IMAGES: &str = "/runtime.v1.ImageService/ListImages";
    /// `ImageStatus`.
    pub const IMAGE_STATUS: &str = "/runtime.v1.ImageService/ImageStatus";
    /// `PullImage`.
    pub const PULL_IMAGE: &str = "/runtime.v1.ImageService/PullImage";
    /// `RemoveImage`.
    pub const REMOVE_IMAGE: &str = "/runtime.v1.ImageService/RemoveImage";
    /// `ImageFsInfo`.
    pub const IMAGE_FS_INFO: &str = "/runtime.v1.ImageService/ImageFsInfo";
    /// `CreateContainer` (RuntimeService).
    pub const CREATE_CONTAINER: &str = "/runtime.v1.RuntimeService/CreateContainer";
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::runtime::v1::*;

    /// Field numbers checked against the wire: the bytes a hand-assembled message would have.
    #[test]
    fn auth_config_field_numbers_match_the_cri_api() {
        let auth = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            auth: "a".into(),
            server_address: "s".into(),
            identity_token: "i".into(),
            registry_token: "r".into(),
        };
        // Each field is a length-delimited string: tag = (number << 3) | 2.
        let expected: Vec<u8> = [
            (1, b'u'),
            (2, b'p'),
            (3, b'a'),
            (4, b's'),
            (5, b'i'),
            (6, b'r'),
        ]
        .into_iter()
        .flat_map(|(number, value)| [(number << 3) | 2, 1, value])
        .collect();
        assert_eq!(auth.encode_to_vec(), expected);
    }

    #[test]
    fn pull_request_and_sandbox_metadata_field_numbers_match_the_cri_api() {
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: "i".into(),
                user_specified_image: "x".into(),
                runtime_handler: "h".into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "n".into(),
                    uid: "u".into(),
                    namespace: "s".into(),
                    attempt: 7,
                }),
                ..Default::default()
            }),
        };
        let bytes = request.encode_to_vec();
        // ImageSpec (field 1): image = 1, user_specified_image = 18, runtime_handler = 19.
        let image_spec = [0x0a, 1, b'i', 0x92, 0x01, 1, b'x', 0x9a, 0x01, 1, b'h'];
        let mut expected = vec![0x0a, image_spec.len() as u8];
        expected.extend(image_spec);
        // PodSandboxConfig (field 3) > metadata (field 1): name 1, uid 2, namespace 3, attempt 4.
        let metadata = [0x0a, 1, b'n', 0x12, 1, b'u', 0x1a, 1, b's', 0x20, 7];
        expected.extend([0x1a, metadata.len() as u8 + 2, 0x0a, metadata.len() as u8]);
        expected.extend(metadata);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn unknown_fields_are_dropped_by_a_decode_and_encode_round_trip() {
        // Why the proxy must forward bytes: field 99 is not in this schema.
        let mut bytes = PullImageResponse {
            image_ref: "sha256:1".into(),
        }
        .encode_to_vec();
        bytes.extend([0x9a, 0x06, 2, b'h', b'i']);
        let decoded = PullImageResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.image_ref, "sha256:1");
        assert_ne!(decoded.encode_to_vec(), bytes);
    }

    #[test]
    fn auth_config_debug_never_shows_secrets() {
        let canary = "CANARY-cri-api";
        let auth = AuthConfig {
            username: "robot".into(),
            password: canary.into(),
            auth: canary.into(),
            identity_token: canary.into(),
            registry_token: canary.into(),
            server_address: "https://r.example".into(),
        };
        let shown = format!(
            "{auth:?} {:?}",
            PullImageRequest {
                auth: Some(auth.clone()),
                ..Default::default()
            }
        );
        assert!(!shown.contains(canary), "{shown}");
        assert!(shown.contains("robot") && shown.contains("https://r.example"));
    }

    /// A stand-in runtime answering PullImage with what it received.
    struct EchoRuntime;

    #[tonic::async_trait]
    impl image_service_server::ImageService for EchoRuntime {
        async fn list_images(
            &self,
            _: tonic::Request<ListImagesRequest>,
        ) -> Result<tonic::Response<ListImagesResponse>, tonic::Status> {
            Ok(tonic::Response::new(ListImagesResponse::default()))
        }
        async fn image_status(
            &self,
            _: tonic::Request<ImageStatusRequest>,
        ) -> Result<tonic::Response<ImageStatusResponse>, tonic::Status> {
            Ok(tonic::Response::new(ImageStatusResponse::default()))
        }
        async fn pull_image(
            &self,
            request: tonic::Request<PullImageRequest>,
        ) -> Result<tonic::Response<PullImageResponse>, tonic::Status> {
            let request = request.into_inner();
            let pod = request
                .sandbox_config
                .and_then(|c| c.metadata)
                .unwrap_or_default();
            let user = request.auth.map(|a| a.username).unwrap_or_default();
            Ok(tonic::Response::new(PullImageResponse {
                image_ref: format!("{}/{} as {user}", pod.namespace, pod.name),
            }))
        }
        async fn remove_image(
            &self,
            _: tonic::Request<RemoveImageRequest>,
        ) -> Result<tonic::Response<RemoveImageResponse>, tonic::Status> {
            Err(tonic::Status::not_found("no such image"))
        }
        async fn image_fs_info(
            &self,
            _: tonic::Request<ImageFsInfoRequest>,
        ) -> Result<tonic::Response<ImageFsInfoResponse>, tonic::Status> {
            Ok(tonic::Response::new(ImageFsInfoResponse::default()))
        }
    }

    #[tokio::test]
    async fn generated_client_and_server_talk_over_a_unix_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("runtime.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(image_service_server::ImageServiceServer::new(EchoRuntime))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );

        let channel =
            tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
                .expect("endpoint")
                .connect()
                .await
                .expect("connects");
        let mut client = image_service_client::ImageServiceClient::new(channel);
        let pulled = client
            .pull_image(PullImageRequest {
                auth: Some(AuthConfig {
                    username: "robot".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: "app-0".into(),
                        namespace: "team".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull answered");
        assert_eq!(pulled.into_inner().image_ref, "team/app-0 as robot");
        let removed = client.remove_image(RemoveImageRequest::default()).await;
        assert_eq!(
            removed.expect_err("stand-in refuses").code(),
            tonic::Code::NotFound
        );
        server.abort();
    }
}
