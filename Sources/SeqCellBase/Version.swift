/// Facts about this build of SeqCell.
public enum SeqCellInfo {
    public static let version = "0.1.0"
    /// The creator string written into checkpoints.
    public static var creator: String { "seqcell \(version)" }
}
