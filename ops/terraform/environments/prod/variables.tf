# Values of this environment: copy terraform.tfvars.example to terraform.tfvars and fill it in
# (ops/README.md says where each value comes from).

variable "aws_region" {
  description = "Region of the environment (the VPC, Aurora, ElastiCache and Cognito pool)."
  type        = string
}

variable "image" {
  description = "zedi-sync image: ACCOUNT.dkr.ecr.REGION.amazonaws.com/zedi-sync:TAG (immutable tag or @sha256 digest)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of Aurora and ElastiCache."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets for the ALB (two or more AZs)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Private subnets for the tasks, with egress to AWS APIs and Cognito (NAT of the network stack, or VPC endpoints)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for domain_name, in aws_region."
  type        = string
}

variable "route53_zone_id" {
  description = "Hosted zone for the realtime host name; null: manage DNS elsewhere."
  type        = string
  default     = null
}

variable "domain_name" {
  description = "Realtime host name (wss://domain_name)."
  type        = string
  default     = null
}

variable "database_security_group_id" {
  description = "Security group of the Aurora cluster."
  type        = string
}

variable "redis_security_group_id" {
  description = "Security group of the ElastiCache replication group; null before Redis is in use."
  type        = string
  default     = null
}

variable "database_url_secret_arn" {
  description = "Secrets Manager secret with DATABASE_URL (postgres://...?sslmode=require)."
  type        = string
}

variable "redis_url_secret_arn" {
  description = "Secrets Manager secret with REDIS_URL (rediss://:AUTH_TOKEN@host:6379); null: single node without Redis."
  type        = string
  default     = null
}

variable "jwt_secret_arn" {
  description = "Secrets Manager secret with JWT_SECRET (HS256); null: HS256 tokens refused."
  type        = string
  default     = null
}

variable "secrets_kms_key_arns" {
  description = "Customer-managed KMS keys of those secrets, if any."
  type        = list(string)
  default     = []
}

variable "cognito_user_pool_id" {
  description = "Cognito user pool of the editors (RS256 tokens)."
  type        = string
  default     = ""
}

variable "cognito_app_client_ids" {
  description = "Cognito app client ids accepted (empty: any client of the pool)."
  type        = list(string)
  default     = []
}

variable "allowed_origins" {
  description = "Origins of the Zedi web app allowed to open WebSockets."
  type        = list(string)
  default     = []
}

variable "metrics_scraper_security_group_ids" {
  description = "Security groups of the Prometheus servers that scrape the tasks."
  type        = list(string)
  default     = []
}

variable "alb_access_logs_bucket" {
  description = "Account log bucket for ALB access logs (with the ELB log-delivery policy); null: none."
  type        = string
  default     = null
}
