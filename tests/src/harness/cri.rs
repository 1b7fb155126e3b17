//! A CRI ImageService client over a unix socket, with requests shaped as kubelet sends them
//! (and the one RuntimeService call the proxy decides on, CreateContainer).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regcred_cri_api::runtime::v1::image_service_client::ImageServiceClient;
use regcred_cri_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use regcred_cri_api::runtime::v1::{
    AuthConfig, ContainerConfig, ContainerMetadata, CreateContainerRequest, Image,
    ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec, ImageStatusRequest, ListImagesRequest,
    Mount, PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemoveImageRequest,
};
use tonic::transport::{Channel, Endpoint};

/// Why a connection to a CRI socket failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The socket could not be dialled.
    Transport(tonic::transport::Error),
    /// The socket answered, but `ImageFsInfo` failed.
    NotServing(tonic::Status),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "cannot connect: {e}"),
            Self::NotServing(status) => write!(f, "ImageFsInfo failed: {status}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A client of one CRI ImageService (containerd, or the proxy in front of it).
#[derive(Debug, Clone)]
pub struct CriClient {
    client: ImageServiceClient<Channel>,
    channel: Channel,
    socket: PathBuf,
}

impl CriClient {
    /// Connects to the ImageService on `socket` and checks that it answers `ImageFsInfo`.
    pub async fn connect(socket: &Path) -> Result<Self, ConnectError> {
        let channel = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .map_err(ConnectError::Transport)?
            .connect()
            .await
            .map_err(ConnectError::Transport)?;
        let mut client = Self {
            client: ImageServiceClient::new(channel.clone()),
            channel,
            socket: socket.to_owned(),
        };
        client
            .image_fs_info()
            .await
            .map_err(ConnectError::NotServing)?;
        Ok(client)
    }

    /// Connects to `socket` without any call (the server's backend may be down).
    pub async fn connect_unchecked(socket: &Path) -> Result<Self, ConnectError> {
        let channel = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .map_err(ConnectError::Transport)?
            .connect()
            .await
            .map_err(ConnectError::Transport)?;
        Ok(Self {
            client: ImageServiceClient::new(channel.clone()),
            channel,
            socket: socket.to_owned(),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The generated client, for requests the helpers do not build.
    pub fn inner(&mut self) -> &mut ImageServiceClient<Channel> {
        &mut self.client
    }

    /// `PullImage`: returns the image reference the runtime reports.
    pub async fn pull(
        &mut self,
        image: &str,
        auth: Option<AuthConfig>,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, tonic::Status> {
        let request = PullImageRequest {
            image: Some(image_spec(image)),
            auth,
            sandbox_config,
        };
        Ok(self
            .client
            .pull_image(request)
            .await?
            .into_inner()
            .image_ref)
    }

    /// `ListImages` without a filter.
    pub async fn list_images(&mut self) -> Result<Vec<Image>, tonic::Status> {
        Ok(self
            .client
            .list_images(ListImagesRequest::default())
            .await?
            .into_inner()
            .images)
    }

    /// `ImageStatus`: `None` when the runtime does not have the image.
    pub async fn image_status(&mut self, image: &str) -> Result<Option<Image>, tonic::Status> {
        let request = ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        Ok(self.client.image_status(request).await?.into_inner().image)
    }

    /// `RemoveImage`.
    pub async fn remove_image(&mut self, image: &str) -> Result<(), tonic::Status> {
        let request = RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        self.client.remove_image(request).await?;
        Ok(())
    }

    /// `CreateContainer` as kubelet sends it: a container named `app` in sandbox
    /// `sandbox_id` of the pod in `sandbox_config`, from image `image_id` (the ID on the
    /// node) that the pod spec names `user_image`. Returns the container ID.
    pub async fn create_container(
        &mut self,
        sandbox_id: &str,
        image_id: &str,
        user_image: &str,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        self.create_container_with_volumes(sandbox_id, image_id, user_image, sandbox_config, &[])
            .await
    }

    /// [`Self::create_container`] with image volumes (KEP-4639): each `(image_id,
    /// user_image)` mounted read-only at `/volume-N`, as kubelet sends them.
    pub async fn create_container_with_volumes(
        &mut self,
        sandbox_id: &str,
        image_id: &str,
        user_image: &str,
        sandbox_config: PodSandboxConfig,
        volumes: &[(&str, &str)],
    ) -> Result<String, tonic::Status> {
        let mounts = volumes
            .iter()
            .enumerate()
            .map(|(n, (id, user))| Mount {
                container_path: format!("/volume-{n}"),
                host_path: String::new(),
                image: Some(ImageSpec {
                    image: (*id).to_owned(),
                    user_specified_image: (*user).to_owned(),
                    ..Default::default()
                }),
            })
            .collect();
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image_id.to_owned(),
                    user_specified_image: user_image.to_owned(),
                    ..Default::default()
                }),
                mounts,
            }),
            sandbox_config: Some(sandbox_config),
        };
        Ok(RuntimeServiceClient::new(self.channel.clone())
            .create_container(request)
            .await?
            .into_inner()
            .container_id)
    }

    /// `ImageFsInfo`.
    pub async fn image_fs_info(&mut self) -> Result<ImageFsInfoResponse, tonic::Status> {
        Ok(self
            .client
            .image_fs_info(ImageFsInfoRequest::default())
            .await?
            .into_inner())
    }
}

/// An `ImageSpec` naming `image`, with `user_specified_image` set as kubelet sets it.
pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..Default::default()
    }
}

/// The `sandbox_config` kubelet sends with `PullImage` for a pod: metadata (name, UID,
/// namespace, attempt 0), kubelet's pod labels and log directory.
pub fn pod_sandbox(namespace: &str, name: &str, uid: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: uid.to_owned(),
            namespace: namespace.to_owned(),
            attempt: 0,
        }),
        hostname: name.to_owned(),
        log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                namespace.to_owned(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), uid.to_owned()),
        ]),
        annotations: HashMap::new(),
    }
}

/// `AuthConfig` with `username`, `password` and `server_address`.
pub fn basic_auth(server_address: &str, username: &str, password: &str) -> AuthConfig {
    AuthConfig {
        username: username.to_owned(),
        password: password.to_owned(),
        server_address: server_address.to_owned(),
        ..Default::default()
    }
}
