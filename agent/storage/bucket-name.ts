/** S3 bucket naming rules (the common subset every S3 implementation accepts). Kept apart from s3-storage.ts so that checking a URL does not load the AWS SDK. */
export function isValidBucketName(bucket: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) && !bucket.includes('..');
}
