terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0, < 7.0.0"
    }
  }

  # State in S3 (bucket, key, region, locking) given at init time:
  #   terraform init -backend-config=backend.hcl      (ops/README.md)
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      Project     = "zedi"
      Environment = "prod"
      Service     = "zedi-realtime"
      ManagedBy   = "terraform"
    }
  }
}
