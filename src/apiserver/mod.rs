pub mod protobuf;
