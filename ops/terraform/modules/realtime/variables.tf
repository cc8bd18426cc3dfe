# Inputs of the realtime module: one zedi-sync service (ECS on Fargate behind an ALB) per
# environment. The network, Aurora, ElastiCache, the ACM certificate, the secrets and the ECR image
# exist already and are passed in (ops/README.md lists them).

# ---- naming ----------------------------------------------------------------------------------

variable "project" {
  description = "Project name: prefix of every resource name and first half of the CloudWatch namespace ({project}/{environment})."
  type        = string
  default     = "zedi"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.project))
    error_message = "project must be lower-case letters, digits and dashes (2-21 characters)."
  }
}

variable "environment" {
  description = "Environment name (dev, prod, ...): second half of the CloudWatch namespace."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be lower-case letters, digits and dashes (2-16 characters)."
  }
}

variable "aws_region" {
  description = "Region the service runs in (awslogs driver, CloudWatch publisher)."
  type        = string
}

variable "tags" {
  description = "Extra tags for every resource (the provider's default_tags apply too)."
  type        = map(string)
  default     = {}
}

# ---- network ---------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC of Aurora and ElastiCache."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing ALB (at least two AZs)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks (no public IPs). They need a route to ECR, Secrets Manager, CloudWatch and Cognito's JWKS endpoint: a NAT gateway of the network stack, or VPC endpoints plus NAT for Cognito."
  type        = list(string)
}

variable "alb_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the ALB on 80 (redirect only) and 443. Browsers: 0.0.0.0/0."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "database_security_group_id" {
  description = "Security group of the Aurora cluster. The module adds an ingress rule on it for the tasks (5432)."
  type        = string
}

variable "database_port" {
  description = "Aurora PostgreSQL port."
  type        = number
  default     = 5432
}

variable "redis_security_group_id" {
  description = "Security group of the ElastiCache replication group. The module adds an ingress rule on it for the tasks. null: no rule (no Redis yet)."
  type        = string
  default     = null
}

variable "redis_port" {
  description = "ElastiCache Redis port."
  type        = number
  default     = 6379
}

variable "metrics_scraper_security_group_ids" {
  description = "Security groups of Prometheus servers allowed to scrape GET /metrics on the container port (the ALB answers 404 for /metrics)."
  type        = list(string)
  default     = []
}

# ---- TLS / DNS ---------------------------------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener (the wss:// host name the editors use)."
  type        = string
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "route53_zone_id" {
  description = "Hosted zone for an alias record to the ALB. null: no record (point DNS yourself)."
  type        = string
  default     = null
}

variable "domain_name" {
  description = "Host name of the alias record (e.g. realtime.zedi.example). Used with route53_zone_id."
  type        = string
  default     = null
}

variable "alb_deletion_protection" {
  description = "Protect the ALB from deletion."
  type        = bool
  default     = true
}

variable "alb_access_logs_bucket" {
  description = "Existing S3 bucket for ALB access logs (with the ELB log-delivery bucket policy). null: no access logs."
  type        = string
  default     = null
}

# ---- container -----------------------------------------------------------------------------------

variable "image" {
  description = "Container image of zedi-sync, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/zedi-sync:1.4.0 (an immutable tag or a digest)."
  type        = string
}

variable "container_port" {
  description = "Port the daemon listens on: config/default.toml server.port, passed as env PORT. The target group, health check and security groups use it."
  type        = number
  default     = 1234
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
  default     = 256
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
  default     = 512
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64: must match the image's platform."
  type        = string
  default     = "X86_64"
}

variable "log_level" {
  description = "tracing filter (config log.level)."
  type        = string
  default     = "info"
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group."
  type        = number
  default     = 365
}

variable "database_url_secret_arn" {
  description = "Secrets Manager secret holding DATABASE_URL (postgres://user:password@aurora-endpoint:5432/db). A JSON key may be selected with the ECS syntax arn:...:secret:name-AbCdEf:key::."
  type        = string
}

variable "redis_url_secret_arn" {
  description = "Secrets Manager secret holding REDIS_URL (rediss://:AUTH_TOKEN@elasticache-endpoint:6379). null: REDIS_URL is not set (a single task without clustering)."
  type        = string
  default     = null
}

variable "jwt_secret_arn" {
  description = "Secrets Manager secret holding JWT_SECRET (HS256 service tokens). null: HS256 tokens are refused."
  type        = string
  default     = null
}

variable "secrets_kms_key_arns" {
  description = "Customer-managed KMS keys that encrypt the secrets above (empty when they use aws/secretsmanager)."
  type        = list(string)
  default     = []
}

variable "database_sslmode" {
  description = "store.sslmode: require (encrypted, no certificate check; needs no CA bundle) or verify-full with database_ssl_root_cert."
  type        = string
  default     = "require"

  validation {
    condition     = contains(["require", "verify-ca", "verify-full"], var.database_sslmode)
    error_message = "Aurora is reached over TLS: require, verify-ca or verify-full."
  }
}

variable "database_ssl_root_cert" {
  description = "Path inside the container of a PEM CA bundle (the RDS global bundle) for verify-ca/verify-full; empty: the public web PKI roots."
  type        = string
  default     = ""
}

variable "cognito_user_pool_id" {
  description = "Cognito user pool whose RS256 tokens are accepted (env COGNITO_USER_POOL_ID). Empty: none."
  type        = string
  default     = ""
}

variable "cognito_region" {
  description = "Region of the Cognito user pool (env COGNITO_REGION). Empty: aws_region."
  type        = string
  default     = ""
}

variable "cognito_app_client_ids" {
  description = "App client ids accepted in aud / client_id (auth.audiences). Empty: any client of the pool."
  type        = list(string)
  default     = []
}

variable "allowed_origins" {
  description = "Browser origins allowed to open a WebSocket (env ALLOWED_ORIGINS). Empty: any."
  type        = list(string)
  default     = []
}

variable "extra_environment" {
  description = "More container environment (ZEDI__SECTION__KEY = value); wins over the module's own values."
  type        = map(string)
  default     = {}
}

# ---- capacity --------------------------------------------------------------------------------------

variable "min_count" {
  description = "Fewest tasks (also the initial desired count)."
  type        = number
  default     = 1
}

variable "max_count" {
  description = "Most tasks."
  type        = number
  default     = 2
}

variable "connections_per_task" {
  description = "Target of the ActiveConnections tracking policy: average open WebSockets per task."
  type        = number
  default     = 100
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation of the service."
  type        = number
  default     = 70
}

variable "memory_target_percent" {
  description = "Target average memory utilisation of the service."
  type        = number
  default     = 75
}

variable "memory_pressure_alarm_percent" {
  description = "Alarm when the fullest task's memory budget (MemoryPressure) stays above this percent; at 80 a task refuses new WebSockets, at 90 new documents, at 100 it closes sockets. null: no alarm."
  type        = number
  default     = 90

  validation {
    # coalesce: Terraform evaluates both sides of ||, and null > 0 is an error.
    condition     = coalesce(var.memory_pressure_alarm_percent, 50) > 0 && coalesce(var.memory_pressure_alarm_percent, 50) <= 100
    error_message = "memory_pressure_alarm_percent must be in (0, 100], or null."
  }
}

variable "alarm_actions" {
  description = "ARNs (SNS topics) notified when an alarm of this module goes to ALARM or back to OK. Empty: the alarm is only visible in the console."
  type        = list(string)
  default     = []
}

variable "fargate_base_count" {
  description = "Tasks always on on-demand FARGATE; every task above it goes to FARGATE_SPOT."
  type        = number
  default     = 1
}

variable "enable_execute_command" {
  description = "Allow ECS Exec into the tasks (grants the SSM channel permissions to the task role, and makes the root filesystem writable, which ECS Exec needs)."
  type        = bool
  default     = false
}
